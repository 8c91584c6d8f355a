// Elementwise ops, reductions and casts: the checks, then the SIMD kernels of the table K on
// the pool's threads.

#include <algorithm>
#include <limits>
#include <vector>

#include "isa.h"
#include "ops.h"
#include "pool.h"

namespace needle_cpu {

namespace {

#define NDL_NAME(prefix, op) prefix #op,
#define NDL_EWISE(op) NDL_NAME("ewise_", op)
#define NDL_SCALAR(op) NDL_NAME("scalar_", op)
const char* const kEwiseArith[] = {NDL_ARITHMETIC(NDL_EWISE)};
const char* const kScalarArith[] = {NDL_ARITHMETIC(NDL_SCALAR)};
const char* const kEwiseCmp[] = {NDL_COMPARE(NDL_EWISE) NDL_SCALAR_COMPARE(NDL_EWISE)};
const char* const kScalarCmp[] = {NDL_COMPARE(NDL_SCALAR) NDL_SCALAR_COMPARE(NDL_SCALAR)};
const char* const kUnary[] = {NDL_UNARY(NDL_EWISE)};
#undef NDL_SCALAR
#undef NDL_EWISE
#undef NDL_NAME

// Integer handles: true division and negative powers are refused as numpy refuses them (core
// divides integers as floats, so neither reaches here from needle).
template <class T>
void check_integer_op(Arith op, const char* kernel, DType d) {
  if constexpr (!std::is_floating_point_v<T>) {
    if (op == Arith::div)
      fail(std::string(kernel) + " divides float handles (core casts integers first), not " +
           name(d));
  }
}

template <class T>
void no_negative_powers(const char* kernel, const T* y, int64_t n) {
  if constexpr (!std::is_floating_point_v<T>)
    if (std::any_of(y, y + n, [](T v) { return v < 0; }))
      fail(std::string(kernel) + ": integers to negative integer powers are not allowed");
}

void same_sizes(const Array& a, const Array& b, const Array& out) {
  if (a.size() != out.size() || b.size() != out.size())
    fail("buffer sizes differ: " + std::to_string(a.size()) + ", " + std::to_string(b.size()) +
         ", out " + std::to_string(out.size()));
  if (a.dtype() != b.dtype())
    fail(std::string("buffer dtypes differ: ") + name(a.dtype()) + ", " + name(b.dtype()));
}

}  // namespace

void binary(Arith op, const Array& a, const Array& b, Array& out) {
  same(a, b, out);
  const char* kernel = kEwiseArith[int(op)];
  visit_number(out.dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    check_integer_op<T>(op, kernel, out.dtype());
    const T *x = a.data<T>(), *y = b.data<T>();
    T* z = out.data<T>();
    if (op == Arith::power) no_negative_powers(kernel, y, b.size());
    const int64_t cost = op == Arith::power ? 8 : 1;  // pow: a libm call per element
    MaybeRelease gil(out.size() * cost);
    parallel_for(out.size(), cost, [&](int64_t s, int64_t e) {
      K.typed<T>().binary(int(op), x + s, y + s, z + s, e - s);
    });
  });
}

void scalar(Arith op, const Array& a, pybind11::handle val, Array& out) {
  same(a, out);
  const char* kernel = kScalarArith[int(op)];
  visit_number(out.dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    check_integer_op<T>(op, kernel, out.dtype());
    const T v = scalar_of<T>(val);
    if (op == Arith::power) no_negative_powers(kernel, &v, 1);
    const T* x = a.data<T>();
    T* z = out.data<T>();
    const int64_t cost = op == Arith::power && v != T(2) ? 8 : 1;
    MaybeRelease gil(out.size() * cost);
    parallel_for(out.size(), cost, [&](int64_t s, int64_t e) {
      K.typed<T>().scalar(int(op), x + s, v, z + s, e - s);
    });
  });
}

void compare(Cmp op, const Array& a, const Array& b, Array& out) {
  same_sizes(a, b, out);
  want(out, DType::bool_, "a comparison writes");
  visit_number(a.dtype(), kEwiseCmp[int(op)], [&](auto t) {
    using T = decltype(t);
    const T *x = a.data<T>(), *y = b.data<T>();
    uint8_t* z = out.data<uint8_t>();
    MaybeRelease gil(out.size());
    parallel_for(out.size(), 1, [&](int64_t s, int64_t e) {
      K.typed<T>().compare(int(op), x + s, y + s, z + s, e - s);
    });
  });
}

void scalar_compare(Cmp op, const Array& a, pybind11::handle val, Array& out) {
  same_sizes(a, a, out);
  want(out, DType::bool_, "a comparison writes");
  visit_number(a.dtype(), kScalarCmp[int(op)], [&](auto t) {
    using T = decltype(t);
    const T v = scalar_of<T>(val);
    const T* x = a.data<T>();
    uint8_t* z = out.data<uint8_t>();
    MaybeRelease gil(out.size());
    parallel_for(out.size(), 1, [&](int64_t s, int64_t e) {
      K.typed<T>().scalar_compare(int(op), x + s, v, z + s, e - s);
    });
  });
}

void unary(Unary op, const Array& a, Array& out) {
  same(a, out);
  const char* kernel = kUnary[int(op)];
  visit_number(out.dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_floating_point_v<T>) {
      fail(std::string(kernel) + " takes float32 or float64 handles (core casts integers "
                                 "first), not " + name(out.dtype()));
    } else {
      const T* x = a.data<T>();
      T* z = out.data<T>();
      MaybeRelease gil(out.size() * 4);
      parallel_for(out.size(), 4, [&](int64_t s, int64_t e) {
        K.typed<T>().unary(int(op), x + s, z + s, e - s);
      });
    }
  });
}

namespace {

// out[i] = reduction of row i of x (rows of r). Long rows are cut into blocks combined in
// double for floats (so 16M-element float32 sums stay accurate), wrapping for integers, and
// few long rows are split across the threads.
template <bool Sum, class T>
void reduce_rows(const T* x, T* z, int64_t rows, int64_t r) {
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, T>;
  auto combine = [](Acc acc, T v) -> Acc {
    if constexpr (!Sum) return (v >= acc || v != v) ? Acc(v) : acc;  // NaN wins
    else if constexpr (std::is_floating_point_v<T>) return acc + v;
    else return T(std::make_unsigned_t<T>(acc) + std::make_unsigned_t<T>(v));
  };
  const TypedKernels<T>& k = K.typed<T>();
  auto block = [&k](const T* p, int64_t len) {
    return Sum ? k.sum_block(p, len) : k.max_block(p, len);
  };
  constexpr int64_t B = 4096;
  MaybeRelease gil(checked_mul(rows, r));
  if (rows >= g_threads || r < B * 4) {
    parallel_for(rows, r, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const T* p = x + i * r;
        if (r <= B) {
          z[i] = block(p, r);
          continue;
        }
        Acc acc = Sum ? Acc(0) : Acc(p[0]);
        for (int64_t j = 0; j < r; j += B) acc = combine(acc, block(p + j, std::min(B, r - j)));
        z[i] = T(acc);
      }
    });
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {  // few long rows: split each across the threads
    const T* p = x + i * r;
    const int64_t blocks = (r + B - 1) / B;
    std::vector<T> part(static_cast<size_t>(blocks));
    parallel_for(blocks, B, [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) part[j] = block(p + j * B, std::min(B, r - j * B));
    });
    Acc acc = Sum ? Acc(0) : Acc(part[0]);
    for (T v : part) acc = combine(acc, v);
    z[i] = T(acc);
  }
}

}  // namespace

template <bool Sum>
void reduce(const Array& a, Array& out, int64_t reduce_size) {
  if (reduce_size <= 0 || a.size() != checked_mul(out.size(), reduce_size))
    fail("cannot reduce " + std::to_string(a.size()) + " elements into " +
         std::to_string(out.size()) + " by " + std::to_string(reduce_size));
  if (a.dtype() != out.dtype())
    fail(std::string("reduce dtypes differ: ") + name(a.dtype()) + " into " + name(out.dtype()));
  visit_number(a.dtype(), Sum ? "reduce_sum" : "reduce_max", [&](auto t) {
    using T = decltype(t);
    if (out.size() > 0) reduce_rows<Sum>(a.data<T>(), out.data<T>(), out.size(), reduce_size);
  });
}

template void reduce<true>(const Array&, Array&, int64_t);
template void reduce<false>(const Array&, Array&, int64_t);

namespace {

// x as D, as numpy's astype: floats to integers truncate toward zero; NaN, inf and values out
// of range (undefined behaviour in C++) give D's minimum, as x86's conversions and numpy there.
template <class S, class D>
inline D convert(S x) {
  if constexpr (std::is_same_v<S, D>) {
    return x;
  } else if constexpr (std::is_same_v<D, uint8_t>) {  // to bool: nonzero (NaN too)
    return uint8_t(x != 0);
  } else if constexpr (std::is_same_v<S, uint8_t>) {  // from bool: any nonzero byte is true
    return D(x != 0);
  } else if constexpr (std::is_integral_v<D> && std::is_floating_point_v<S>) {
    constexpr S hi = S(uint64_t(1) << (8 * sizeof(D) - 1));  // 2^31 or 2^63, exact
    return x >= -hi && x < hi ? D(x) : std::numeric_limits<D>::min();
  } else {
    return D(x);  // integers wrap; to floats: rounded
  }
}

}  // namespace

void cast(const Array& a, Array& out) {
  if (a.size() != out.size())
    fail("buffer sizes differ: " + std::to_string(a.size()) + ", out " +
         std::to_string(out.size()));
  if (a.size() == 0) return;
  visit(a.dtype(), [&](auto s) {
    visit(out.dtype(), [&](auto d) {
      using S = decltype(s);
      using D = decltype(d);
      const S* x = a.data<S>();
      D* z = out.data<D>();
      MaybeRelease gil(out.size());
      parallel_for(out.size(), 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) z[i] = convert<S, D>(x[i]);
      });
    });
  });
}

}  // namespace needle_cpu
