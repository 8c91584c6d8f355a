// Instruction-set dispatch: the kernels of kernels.h for the CPU this process runs on.
//
// SIMD bodies live in vmath.h and kernels.h, compiled (in isa.cpp) for the baseline and, on
// x86-64, for AVX2+FMA, chosen at import from the CPU (never an illegal instruction).

#pragma once

#include <cstdint>
#include <type_traits>

namespace needle_cpu {

// The kernels of one element type T (float, double, int32_t, int64_t). `op` numbers the ops of
// oplist.h's lists: Arith for binary/scalar, Cmp for the comparisons, Unary for unary.
template <class T>
struct TypedKernels {
  void (*binary)(int op, const T* a, const T* b, T* out, int64_t n);
  void (*scalar)(int op, const T* a, T val, T* out, int64_t n);
  void (*compare)(int op, const T* a, const T* b, uint8_t* out, int64_t n);
  void (*scalar_compare)(int op, const T* a, T val, uint8_t* out, int64_t n);
  void (*unary)(int op, const T* a, T* out, int64_t n);  // float dtypes only
  T (*sum_block)(const T* a, int64_t n);                 // wraps for integers
  T (*max_block)(const T* a, int64_t n);                 // n >= 1
  T (*exp_shift_sum)(const T* a, T shift, T* out, int64_t n);  // float dtypes only
};

// copy2d over the bits of 1-, 4- and 8-byte elements: (src, dst, n0, n1, s0, s1, d0, d1).
template <class U>
using Copy2d = void (*)(const U*, U*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
// Rows [i0, i1) of an integer product: (a, b, c, i0, i1, n, p).
template <class T>
using IGemm = void (*)(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t);

struct Kernels {
  const char* name;
  TypedKernels<float> f32;
  TypedKernels<double> f64;
  TypedKernels<int32_t> i32;
  TypedKernels<int64_t> i64;
  Copy2d<uint8_t> copy2d_1;
  Copy2d<uint32_t> copy2d_4;
  Copy2d<uint64_t> copy2d_8;
  void (*gemm_small_k)(const float* const*, int64_t, int64_t, int64_t, const float*, float*,
                       int64_t);
  IGemm<int32_t> igemm_32;
  IGemm<int64_t> igemm_64;

  template <class T>
  const TypedKernels<T>& typed() const {
    if constexpr (std::is_same_v<T, float>) return f32;
    else if constexpr (std::is_same_v<T, double>) return f64;
    else if constexpr (std::is_same_v<T, int32_t>) return i32;
    else return i64;
  }
  template <class U>
  Copy2d<U> copy2d() const {
    if constexpr (sizeof(U) == 1) return copy2d_1;
    else if constexpr (sizeof(U) == 4) return copy2d_4;
    else return copy2d_8;
  }
  template <class T>
  IGemm<T> igemm() const {
    if constexpr (sizeof(T) == 4) return igemm_32;
    else return igemm_64;
  }
};

extern const Kernels K;  // picked at import

}  // namespace needle_cpu
