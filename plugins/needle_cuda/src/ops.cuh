// needle-cuda's elementwise and reduction ops: each op list lives here once (the X-macros
// below), and the kernels (kernels.cuh), the contract functions and the pybind registration
// (ndarray_cuda.cu) all expand the same lists. Every functor is a template over the element type
// and follows numpy: integers wrap on overflow, NaN propagates through maximum, comparisons with
// NaN are false except !=.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "dtypes.cuh"

namespace needle_cuda {

// X(name, functor, dtypes): ewise_<name>(a, b, out) and scalar_<name>(a, val, out).
#define NEEDLE_ARITHMETIC_OPS(X)              \
  X(add, Add, groups::arithmetic)             \
  X(mul, Mul, groups::arithmetic)             \
  X(div, Div, (groups::arithmetic & kFloats)) \
  X(maximum, Maximum, groups::arithmetic)     \
  X(power, Power, groups::arithmetic)

// BOTH(name, functor): ewise_<name> and scalar_<name>; SCALAR(name, functor): scalar_<name> only
// (a < b is b > a, so the contract has no ewise_lt). Every comparison writes bool.
#define NEEDLE_COMPARE_OPS(BOTH, SCALAR) \
  BOTH(eq, Eq)                           \
  BOTH(ne, Ne)                           \
  BOTH(ge, Ge)                           \
  BOTH(gt, Gt)                           \
  SCALAR(le, Le)                         \
  SCALAR(lt, Lt)

// X(name, functor): ewise_<name>(a, out), float dtypes.
#define NEEDLE_UNARY_OPS(X) \
  X(log, Log)               \
  X(exp, Exp)               \
  X(tanh, Tanh)

// X(name, functor): reduce_<name>(a, out, reduce_size).
#define NEEDLE_REDUCE_OPS(X) \
  X(sum, SumOp)              \
  X(max, MaxOp)

// ------------------------------------------------------------------------------- helpers

template <typename T>
using Unsigned = std::make_unsigned_t<T>;

// Integer + and * wrap around as numpy's do (through unsigned math: signed overflow is UB).
template <typename T>
__device__ __forceinline__ T wrap_add(T x, T y) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<Unsigned<T>>(x) + static_cast<Unsigned<T>>(y));
  } else {
    return x + y;
  }
}

template <typename T>
__device__ __forceinline__ T wrap_mul(T x, T y) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<Unsigned<T>>(x) * static_cast<Unsigned<T>>(y));
  } else {
    return x * y;
  }
}

template <typename T>
__device__ __forceinline__ bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>) {
    return x != x;
  } else {
    return false;
  }
}

// acc + x * y: fused for floats (one rounding, as BLAS does), wrapping for integers.
template <typename T>
__device__ __forceinline__ T mul_add(T x, T y, T acc) {
  if constexpr (std::is_same_v<T, float>) {
    return fmaf(x, y, acc);
  } else if constexpr (std::is_same_v<T, double>) {
    return fma(x, y, acc);
  } else {
    return wrap_add(acc, wrap_mul(x, y));
  }
}

// x ** n for integers by squaring, wrapping; n < 0 gives C's truncated 1 / x**-n (core refuses
// negative integer powers before calling, as numpy does).
template <typename T>
__device__ __forceinline__ T int_pow(T x, T n) {
  if (n < 0) return x == 1 ? T(1) : x == -1 ? ((n & 1) ? T(-1) : T(1)) : T(0);
  Unsigned<T> result = 1, base = static_cast<Unsigned<T>>(x);
  for (Unsigned<T> e = static_cast<Unsigned<T>>(n); e != 0; e >>= 1) {
    if (e & 1) result *= base;
    base *= base;
  }
  return static_cast<T>(result);
}

// The float and double versions of CUDA's (and libm's) functions under one name.
__device__ __forceinline__ float f_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double f_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float f_log(float x) { return logf(x); }
__device__ __forceinline__ double f_log(double x) { return log(x); }
__device__ __forceinline__ float f_exp(float x) { return expf(x); }
__device__ __forceinline__ double f_exp(double x) { return exp(x); }
__device__ __forceinline__ float f_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double f_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float f_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double f_sqrt(double x) { return sqrt(x); }

// --------------------------------------------------------------------- binary functors

struct Add {
  template <typename T>
  __device__ T operator()(T x, T y) const {
    return wrap_add(x, y);
  }
};
struct Mul {
  template <typename T>
  __device__ T operator()(T x, T y) const {
    return wrap_mul(x, y);
  }
};
struct Div {  // float dtypes only (see the list above): integer division is never reached
  template <typename T>
  __device__ T operator()(T x, T y) const {
    return x / y;
  }
};
// numpy's maximum: NaN in either operand gives NaN; maximum(-0.0, 0.0) is the second operand.
struct Maximum {
  template <typename T>
  __device__ T operator()(T x, T y) const {
    return (x > y || is_nan(x)) ? x : y;
  }
};
struct Power {
  template <typename T>
  __device__ T operator()(T x, T y) const {
    if constexpr (std::is_floating_point_v<T>) {
      return f_pow(x, y);
    } else {
      return int_pow(x, y);
    }
  }
};

struct Eq {
  template <typename T>
  __device__ bool operator()(T x, T y) const {
    return x == y;
  }
};
struct Ne {
  template <typename T>
  __device__ bool operator()(T x, T y) const {
    return x != y;
  }
};
struct Ge {
  template <typename T>
  __device__ bool operator()(T x, T y) const {
    return x >= y;
  }
};
struct Gt {
  template <typename T>
  __device__ bool operator()(T x, T y) const {
    return x > y;
  }
};
struct Le {
  template <typename T>
  __device__ bool operator()(T x, T y) const {
    return x <= y;
  }
};
struct Lt {
  template <typename T>
  __device__ bool operator()(T x, T y) const {
    return x < y;
  }
};

// ---------------------------------------------------------------------- unary functors

struct Log {
  template <typename T>
  __device__ T operator()(T x) const {
    return f_log(x);
  }
};
struct Exp {
  template <typename T>
  __device__ T operator()(T x) const {
    return f_exp(x);
  }
};
struct Tanh {
  template <typename T>
  __device__ T operator()(T x) const {
    return f_tanh(x);
  }
};

// x -> op(x, val): the scalar_ kernels.
template <typename Op, typename T>
struct WithScalar {
  Op op;
  T val;
  __device__ auto operator()(T x) const { return op(x, val); }
};

// numpy's float power by a scalar takes these shortcuts (and so differs from pow at -0.0, -inf
// and in the last bit): x ** 0.5 is sqrt(x), x ** 2 is x * x, x ** -1 is 1 / x, x ** 1 is x.
struct Sqrt {
  template <typename T>
  __device__ T operator()(T x) const {
    return f_sqrt(x);
  }
};
struct Square {
  template <typename T>
  __device__ T operator()(T x) const {
    return x * x;
  }
};
struct Reciprocal {
  template <typename T>
  __device__ T operator()(T x) const {
    return T(1) / x;
  }
};
struct Identity {
  template <typename T>
  __device__ T operator()(T x) const {
    return x;
  }
};

// numpy's astype: float -> integer truncates toward zero; NaN gives 0 and out-of-range values
// saturate (numpy leaves both unspecified; a plain C++ conversion would be undefined behaviour);
// anything -> bool is x != 0 (NaN is true); integer -> narrower integer wraps.
template <typename To>
struct Convert {
  template <typename From>
  __device__ To operator()(From x) const {
    if constexpr (std::is_same_v<To, bool>) {
      return x != From(0);
    } else if constexpr (std::is_integral_v<To> && std::is_floating_point_v<From>) {
      // 2^(bits-1) is exact in float and double, so the bounds below are exact too.
      constexpr From top = From(Unsigned<To>(1) << (sizeof(To) * 8 - 1));
      if (is_nan(x)) return To(0);
      if (x >= top) return static_cast<To>(Unsigned<To>(-1) >> 1);
      if (x < -top) return static_cast<To>(Unsigned<To>(1) << (sizeof(To) * 8 - 1));
      return static_cast<To>(x);
    } else if constexpr (std::is_integral_v<To> && std::is_integral_v<From>) {
      return static_cast<To>(static_cast<Unsigned<To>>(x));
    } else {
      return static_cast<To>(x);
    }
  }
};

// ------------------------------------------------------------------------- reductions

// The smallest value of T: the identity of max (-inf for floats).
template <typename T>
__device__ __forceinline__ T lowest() {
  if constexpr (std::is_same_v<T, float>) {
    return -INFINITY;
  } else if constexpr (std::is_same_v<T, double>) {
    return -static_cast<double>(INFINITY);
  } else if constexpr (std::is_same_v<T, int32_t>) {
    return INT32_MIN;
  } else {
    return INT64_MIN;
  }
}

struct SumOp {
  template <typename T>
  static __device__ T identity() {
    return T(0);
  }
  template <typename T>
  __device__ T operator()(T x, T y) const {
    return wrap_add(x, y);
  }
};
struct MaxOp {  // NaN propagates, as in numpy
  template <typename T>
  static __device__ T identity() {
    return lowest<T>();
  }
  template <typename T>
  __device__ T operator()(T x, T y) const {
    return (x > y || is_nan(x)) ? x : y;
  }
};

}  // namespace needle_cuda
