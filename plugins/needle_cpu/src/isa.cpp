// vmath.h and kernels.h compiled once per instruction set, and the table of the set picked at
// import.
//
// Only the code between the target pragmas below is compiled for AVX2+FMA, and it runs
// only through K once the CPU is known to have both: everything else in this file (the
// choice itself, run at import) is compiled for the baseline.

#include "isa.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "oplist.h"  // the op lists kernels.h expands

#if defined(__x86_64__)
#include <immintrin.h>  // for kernels.h: the intrinsics carry their own target attributes
#endif

#define NDL_ISA_AVX2 0
namespace isa_base {
#include "vmath.h"
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
#include "vmath.h"
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

#define NDL_TYPED(ns, T)                                                                \
  TypedKernels<T> {                                                                     \
    ns::binary<T>, ns::scalar<T>, ns::compare<T>, ns::scalar_compare<T>, ns::unary<T>, \
        ns::sum_block<T>, ns::max_block<T>, ns::exp_shift_sum<T>                        \
  }
#define NDL_TABLE(ns)                                                                        \
  Kernels {                                                                                  \
    #ns, NDL_TYPED(ns, float), NDL_TYPED(ns, double), NDL_TYPED(ns, int32_t),                \
        NDL_TYPED(ns, int64_t), ns::copy2d<uint8_t>, ns::copy2d<uint32_t>, ns::copy2d<uint64_t>, \
        ns::gemm_small_k, ns::igemm_rows<int32_t>, ns::igemm_rows<int64_t>                   \
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
