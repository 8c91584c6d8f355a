// kernels.h compiled once per instruction set, and the table of the set picked at import.
//
// Only the code between the target pragmas below is compiled for AVX2+FMA, and it runs
// only through K once the CPU is known to have both: everything else in this file (the
// choice itself, run at import) is compiled for the baseline.

#include "isa.h"

#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>  // for kernels.h: the intrinsics carry their own target attributes
#endif

#define NDL_ISA_AVX2 0
namespace isa_base {
#include "kernels.h"
}
#undef NDL_ISA_AVX2
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NDL_HAVE_AVX2 1
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define NDL_ISA_AVX2 1
namespace isa_avx2 {
#include "kernels.h"
}
#undef NDL_ISA_AVX2
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

namespace needle_cpu {
namespace {

#define NDL_TABLE(ns) \
  Kernels {                                                                      \
    #ns, ns::binary, ns::scalar, ns::unary, ns::sum_block, ns::max_block, ns::copy2d, \
        ns::gemm_small_k                                                           \
  }

Kernels pick_kernels() {
#ifdef NDL_HAVE_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      std::getenv("NEEDLE_CPU_BASELINE") == nullptr)  // the env var forces the baseline (tests)
    return NDL_TABLE(isa_avx2);
#endif
  return NDL_TABLE(isa_base);
}

}  // namespace

const Kernels K = pick_kernels();

}  // namespace needle_cpu
