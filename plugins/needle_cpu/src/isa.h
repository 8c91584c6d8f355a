// Instruction-set dispatch: the kernels of kernels.h for the CPU this process runs on.
//
// SIMD bodies live in kernels.h, compiled (in isa.cpp) for the baseline and, on x86-64, for
// AVX2+FMA, chosen at import from the CPU (never an illegal instruction).

#pragma once

#include <cstdint>

namespace needle_cpu {

struct Kernels {
  const char* name;
  void (*binary)(int, const float*, const float*, float*, int64_t);
  void (*scalar)(int, const float*, float, float*, int64_t);
  void (*unary)(int, const float*, float*, int64_t);
  float (*sum_block)(const float*, int64_t);
  float (*max_block)(const float*, int64_t);
  void (*copy2d)(const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
  void (*gemm_small_k)(const float* const*, int64_t, int64_t, int64_t, const float*, float*,
                       int64_t);
};

extern const Kernels K;  // picked at import

}  // namespace needle_cpu
