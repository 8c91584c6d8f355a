// Matrix products: OpenBLAS from the scipy-openblas32 wheel for float32 and float64 (threaded
// by our pool), a cache-blocked loop for integers (exact, wrapping as numpy's), and the
// course's tiled product.

#include <cblas.h>  // scipy-openblas32's header: every symbol carries a scipy_ prefix

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "isa.h"
#include "ops.h"
#include "pool.h"

namespace needle_cpu {

void check_blas_dims(std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) {
    if (d < 0) fail("matrix dimensions must be >= 0");
    if (d > INT32_MAX) fail("matrix dimension " + std::to_string(d) + " exceeds 2^31 - 1");
  }
}

namespace {

// One OpenBLAS call: rows [r0, r1) and columns [c0, c1) of c = A @ B, where A is a (m, n)
// row-major, or a's (n, m) read transposed when ta; B is b (n, p), or b's (p, n) when tb.
template <class T>
void blas_block(const T* a, const T* b, T* c, int64_t m, int64_t n, int64_t p, bool ta, bool tb,
                int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  const int rows = int(r1 - r0), cols = int(c1 - c0);
  const T* a0 = ta ? a + r0 : a + r0 * n;
  const T* b0 = tb ? b + c0 * n : b + c0;
  const int lda = int(ta ? m : n), ldb = int(tb ? n : p);
  const auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    scipy_cblas_sgemm(CblasRowMajor, opa, opb, rows, cols, int(n), 1.f, a0, lda, b0, ldb, 0.f,
                      c + r0 * p + c0, int(p));
  else
    scipy_cblas_dgemm(CblasRowMajor, opa, opb, rows, cols, int(n), 1.0, a0, lda, b0, ldb, 0.0,
                      c + r0 * p + c0, int(p));
}

// x (rows, cols) row-major, transposed into a new compact buffer.
template <class T>
std::vector<T> transposed(const T* x, int64_t rows, int64_t cols) {
  std::vector<T> t(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[size_t(j * rows + i)] = x[i * cols + j];
  return t;
}

}  // namespace

// c (m, p) = A (m, n) @ B (n, p), c compact row-major; A is a, or a (n, m) transposed when ta,
// and B is b, or b (p, n) transposed when tb (BLAS reads them in place). OpenBLAS runs
// single-threaded (set at import); a big product is cut into row blocks (column blocks when
// p > m), one per thread of our pool, so one pool serves every kernel and no second one spins
// against it. Integers: rows across the pool, each through the blocked kernel of kernels.h
// (transposed operands are copied first).
template <class T>
void gemm(const T* a, const T* b, T* c, int64_t m, int64_t n, int64_t p, bool ta, bool tb) {
  if (m == 0 || p == 0) return;
  if (n == 0) return void(std::fill_n(c, m * p, T(0)));
  if constexpr (std::is_integral_v<T>) {
    if (ta || tb) {
      std::vector<T> at, bt;
      if (ta) at = transposed(a, n, m);
      if (tb) bt = transposed(b, p, n);
      return gemm(ta ? at.data() : a, tb ? bt.data() : b, c, m, n, p, false, false);
    }
    const auto rows = K.igemm<T>();
    parallel_for(m, n * p, [&](int64_t s, int64_t e) { rows(a, b, c, s, e, n, p); });
  } else {
    // threadpoolctl's threadpool_limits(n) (a scikit-learn habit; bench_train's too) sets every
    // OpenBLAS in the process, this one included: its threads then spun against our pool's and
    // a 2-thread ResNet9 step ran 2.7x slower. Put it back first (a read when nothing changed).
    if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
    const int64_t nt = std::min<int64_t>(g_threads, m * n * p / (1 << 18));
    if (nt <= 1) return blas_block(a, b, c, m, n, p, ta, tb, 0, m, 0, p);
    const bool by_rows = m >= p;
    const int64_t len = by_rows ? m : p;
    // One block per thread (each block packs b again), claimed through a counter: a worker
    // that has not woken yet when the caller is done leaves its block to the caller.
    auto cut = [&](int64_t i) { return i == nt ? len : (len * i / nt) & ~int64_t(15); };
    std::atomic<int64_t> next{0};
    auto body = [&] {
      for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < nt;) {
        const int64_t s = cut(i), e = cut(i + 1);  // multiples of 16, the kernels' unrolling
        if (s >= e) continue;
        if (by_rows) blas_block(a, b, c, m, n, p, ta, tb, s, e, 0, p);
        else blas_block(a, b, c, m, n, p, ta, tb, 0, m, s, e);
      }
    };
    pool()->run(int(nt), body);
  }
}

#define NDL_GEMM(T) \
  template void gemm<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, bool, bool);
NDL_GEMM(float)
NDL_GEMM(double)
NDL_GEMM(int32_t)
NDL_GEMM(int64_t)
#undef NDL_GEMM

namespace {

void same_dtypes(const char* kernel, const Array& a, const Array& b, const Array& out) {
  if (a.dtype() != b.dtype() || a.dtype() != out.dtype())
    fail(std::string(kernel) + " dtypes differ: " + name(a.dtype()) + ", " + name(b.dtype()) +
         ", out " + name(out.dtype()));
}

}  // namespace

void matmul_t(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p,
              bool trans_a, bool trans_b) {
  const char* kernel = trans_a || trans_b ? "matmul_t" : "matmul";
  check_blas_dims({m, n, p});
  if (a.size() != checked_mul(m, n) || b.size() != checked_mul(n, p) ||
      out.size() != checked_mul(m, p))
    fail(std::string(kernel) + " sizes " + std::to_string(a.size()) + ", " +
         std::to_string(b.size()) + ", " + std::to_string(out.size()) + " do not match m=" +
         std::to_string(m) + " n=" + std::to_string(n) + " p=" + std::to_string(p));
  same_dtypes(kernel, a, b, out);
  visit_number(out.dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    if (out.size() == 0) return;
    const T *x = a.data<T>(), *y = b.data<T>();
    T* z = out.data<T>();
    MaybeRelease gil(checked_mul(out.size(), n));
    gemm(x, y, z, m, n, p, trans_a, trans_b);
  });
}

void matmul(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p) {
  matmul_t(a, b, out, m, n, p, false, false);
}

void bmm(const Array& a, const Array& b, Array& out, int64_t batch, int64_t m, int64_t n,
         int64_t p) {
  check_blas_dims({batch, m, n, p});
  if (a.size() != checked_mul(batch, checked_mul(m, n)) ||
      b.size() != checked_mul(batch, checked_mul(n, p)) ||
      out.size() != checked_mul(batch, checked_mul(m, p)))
    fail("bmm sizes do not match batch=" + std::to_string(batch) + " m=" + std::to_string(m) +
         " n=" + std::to_string(n) + " p=" + std::to_string(p));
  same_dtypes("bmm", a, b, out);
  visit_number(out.dtype(), "bmm", [&](auto t) {
    using T = decltype(t);
    if (out.size() == 0) return;
    const T *x = a.data<T>(), *y = b.data<T>();
    T* z = out.data<T>();
    const int64_t work = checked_mul(m * p, n);
    MaybeRelease gil(checked_mul(work, batch));
    if (batch < 2 * g_threads) {  // few products: each one uses all the threads
      for (int64_t i = 0; i < batch; ++i)
        gemm(x + i * m * n, y + i * n * p, z + i * m * p, m, n, p);
      return;
    }
    parallel_for(batch, work, [&](int64_t s, int64_t e) {  // many: the batch across the threads
      for (int64_t i = s; i < e; ++i) gemm(x + i * m * n, y + i * n * p, z + i * m * p, m, n, p);
    });
  });
}

// The course's tiled layout: a (m/T, n/T, T, T), b (n/T, p/T, T, T), out (m/T, p/T, T, T),
// T = kTile; out tile (i, j) = sum over k of a tile (i, k) @ b tile (k, j).
void matmul_tiled(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p) {
  check_blas_dims({m, n, p});
  if (m % kTile || n % kTile || p % kTile)
    fail("matmul_tiled needs m, n and p divisible by " + std::to_string(kTile) + ", got m=" +
         std::to_string(m) + " n=" + std::to_string(n) + " p=" + std::to_string(p));
  if (a.size() != checked_mul(m, n) || b.size() != checked_mul(n, p) ||
      out.size() != checked_mul(m, p))
    fail("matmul_tiled sizes " + std::to_string(a.size()) + ", " + std::to_string(b.size()) +
         ", " + std::to_string(out.size()) + " do not match m=" + std::to_string(m) +
         " n=" + std::to_string(n) + " p=" + std::to_string(p));
  same_dtypes("matmul_tiled", a, b, out);
  visit_number(out.dtype(), "matmul_tiled", [&](auto t) {
    using T = decltype(t);
    using Acc = typename std::conditional_t<std::is_integral_v<T>, std::make_unsigned<T>,
                                            std::common_type<T>>::type;
    if (out.size() == 0) return;
    const T *x = a.data<T>(), *y = b.data<T>();
    T* z = out.data<T>();
    constexpr int64_t tt = kTile * kTile;
    const int64_t mt = m / kTile, nt = n / kTile, pt = p / kTile;
    MaybeRelease gil(checked_mul(out.size(), n));
    parallel_for(mt * pt, nt * tt * kTile, [&](int64_t s, int64_t e) {
      for (int64_t ij = s; ij < e; ++ij) {
        const int64_t i = ij / pt, j = ij % pt;
        Acc acc[kTile][kTile] = {};
        for (int64_t k = 0; k < nt; ++k) {
          const T* at = x + (i * nt + k) * tt;
          const T* bt = y + (k * pt + j) * tt;
          for (int64_t r = 0; r < kTile; ++r)
            for (int64_t q = 0; q < kTile; ++q)
              for (int64_t c = 0; c < kTile; ++c)
                acc[r][c] += Acc(at[r * kTile + q]) * Acc(bt[q * kTile + c]);
        }
        T* zt = z + ij * tt;
        for (int64_t r = 0; r < kTile; ++r)
          for (int64_t c = 0; c < kTile; ++c) zt[r * kTile + c] = T(acc[r][c]);
      }
    });
  });
}

}  // namespace needle_cpu
