// Matrix products: OpenBLAS from the scipy-openblas32 wheel, threaded by our pool.

#include <cblas.h>  // scipy-openblas32's header: every symbol carries a scipy_ prefix

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "ops.h"
#include "pool.h"

namespace needle_cpu {

void check_blas_dims(std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) {
    if (d < 0) fail("matrix dimensions must be >= 0");
    if (d > INT32_MAX) fail("matrix dimension " + std::to_string(d) + " exceeds 2^31 - 1");
  }
}

// c (m, p) = a (m, n) @ b (n, p), all compact row-major. OpenBLAS runs single-threaded
// (set at import); a big product is cut into row blocks (column blocks when p > m), one per
// thread of our pool, so one pool serves every kernel and no second one spins against it.
void sgemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t p) {
  if (m == 0 || p == 0) return;
  if (n == 0) return void(std::fill_n(c, m * p, 0.f));
  auto block = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(r1 - r0), int(c1 - c0),
                      int(n), 1.f, a + r0 * n, int(n), b + c0, int(p), 0.f, c + r0 * p + c0,
                      int(p));
  };
  const int64_t nt = std::min<int64_t>(g_threads, m * n * p / (1 << 18));
  if (nt <= 1) return block(0, m, 0, p);
  const bool rows = m >= p;
  const int64_t len = rows ? m : p;
  // One block per thread (each block packs b again), claimed through a counter: a worker
  // that has not woken yet when the caller is done leaves its block to the caller.
  auto cut = [&](int64_t i) { return i == nt ? len : (len * i / nt) & ~int64_t(15); };
  std::atomic<int64_t> next{0};
  auto body = [&] {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < nt;) {
      const int64_t s = cut(c), e = cut(c + 1);  // multiples of 16, the kernels' unrolling
      if (s < e) rows ? block(s, e, 0, p) : block(0, m, s, e);
    }
  };
  pool()->run(int(nt), body);
}

void matmul(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p) {
  check_blas_dims({m, n, p});
  if (a.size() != checked_mul(m, n) || b.size() != checked_mul(n, p) ||
      out.size() != checked_mul(m, p))
    fail("matmul sizes " + std::to_string(a.size()) + ", " + std::to_string(b.size()) + ", " +
         std::to_string(out.size()) + " do not match m=" + std::to_string(m) +
         " n=" + std::to_string(n) + " p=" + std::to_string(p));
  if (out.size() == 0) return;
  const float *x = a.data(), *y = b.data();
  float* z = out.data();
  MaybeRelease gil(checked_mul(out.size(), n));
  sgemm(x, y, z, m, n, p);
}

void bmm(const Array& a, const Array& b, Array& out, int64_t batch, int64_t m, int64_t n,
         int64_t p) {
  check_blas_dims({batch, m, n, p});
  if (a.size() != checked_mul(batch, checked_mul(m, n)) ||
      b.size() != checked_mul(batch, checked_mul(n, p)) ||
      out.size() != checked_mul(batch, checked_mul(m, p)))
    fail("bmm sizes do not match batch=" + std::to_string(batch) + " m=" + std::to_string(m) +
         " n=" + std::to_string(n) + " p=" + std::to_string(p));
  if (out.size() == 0) return;
  const float *x = a.data(), *y = b.data();
  float* z = out.data();
  const int64_t work = checked_mul(m * p, n);
  MaybeRelease gil(checked_mul(work, batch));
  if (batch < 2 * g_threads) {  // few products: each one uses all the threads
    for (int64_t i = 0; i < batch; ++i) sgemm(x + i * m * n, y + i * n * p, z + i * m * p, m, n, p);
    return;
  }
  parallel_for(batch, work, [&](int64_t s, int64_t e) {  // many: the batch across the threads
    for (int64_t i = s; i < e; ++i) sgemm(x + i * m * n, y + i * n * p, z + i * m * p, m, n, p);
  });
}

}  // namespace needle_cpu
