// conv2d: NHWC convolution, by a register-tiled kernel (kernels.h, float32) or im2col + GEMM
// (OpenBLAS for float32 and float64, the blocked integer kernel for int32 and int64).

#include <algorithm>
#include <cstdint>
#include <vector>

#include "isa.h"
#include "ops.h"
#include "pool.h"

namespace needle_cpu {

namespace {

// NHWC input x (n, h, w, cin), weight f (k, k, cin, cout), zero padding, into z: im2col rows
// of kk = k*k*cin values, then GEMM of those rows with the (kk, cout) weight.
template <class T>
void conv2d_typed(const T* x, const T* f, T* z, int64_t n, int64_t h, int64_t w, int64_t cin,
                  int64_t cout, int64_t k, int64_t stride, int64_t padding) {
  const int64_t ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1;
  const int64_t hw = ho * wo, kk = k * k * cin, rows = n * hw;
  if (k == 1 && stride == 1 && padding == 0) return gemm(x, f, z, rows, cin, cout);
  const int64_t row = k * cin;  // one kernel row of a patch: contiguous in the input
  auto im2col = [&](int64_t r0, int64_t r1, T* __restrict dst) {  // patch rows [r0, r1)
    int64_t b = r0 / hw, oy = r0 / wo % ho, ox = r0 % wo;
    for (int64_t g = r0; g < r1; ++g) {
      const int64_t ix0 = ox * stride - padding;
      const bool inside_x = ix0 >= 0 && ix0 + k <= w;
      for (int64_t ky = 0; ky < k; ++ky, dst += row) {
        const int64_t iy = oy * stride - padding + ky;
        const T* __restrict src = x + ((b * h + iy) * w + ix0) * cin;
        if (iy < 0 || iy >= h)  // short rows: plain loops beat memcpy calls
          for (int64_t j = 0; j < row; ++j) dst[j] = T(0);
        else if (inside_x)
          for (int64_t j = 0; j < row; ++j) dst[j] = src[j];
        else
          for (int64_t kx = 0; kx < k; ++kx) {
            const bool inside = ix0 + kx >= 0 && ix0 + kx < w;
            for (int64_t c = 0; c < cin; ++c) dst[kx * cin + c] = inside ? src[kx * cin + c] : T(0);
          }
      }
      if (++ox == wo) ox = 0, oy = oy + 1 == ho ? (++b, 0) : oy + 1;  // next output pixel
    }
  };
  // A weight that fits in L2 (k*k*cin*cout <= 128K floats, most CNN layers): our register-tiled
  // GEMM reads each patch as k rows of k*cin floats straight from the input; only patches
  // that cross the padding are copied (with their zeros). Bigger weights: im2col + OpenBLAS.
  if (std::is_same_v<T, float> && kk * cout <= (1 << 17)) {
    constexpr int64_t R = 96;  // output pixels per tile (a multiple of the kernel's 6 rows)
    parallel_for((rows + R - 1) / R, R * kk * cout, [&](int64_t s, int64_t e) {
      std::vector<const T*> ptrs(size_t(R * k));
      std::vector<T> scratch(size_t(R * kk));
      for (int64_t t = s; t < e; ++t) {
        const int64_t r0 = t * R, r1 = std::min(rows, r0 + R);
        int64_t b = r0 / hw, oy = r0 / wo % ho, ox = r0 % wo;
        for (int64_t g = r0; g < r1; ++g) {
          const int64_t i = g - r0, iy0 = oy * stride - padding, ix0 = ox * stride - padding;
          const T** p = ptrs.data() + i * k;
          if (iy0 >= 0 && iy0 + k <= h && ix0 >= 0 && ix0 + k <= w) {
            for (int64_t ky = 0; ky < k; ++ky) p[ky] = x + ((b * h + iy0 + ky) * w + ix0) * cin;
          } else {
            T* patch = scratch.data() + i * kk;
            im2col(g, g + 1, patch);
            for (int64_t ky = 0; ky < k; ++ky) p[ky] = patch + ky * row;
          }
          if (++ox == wo) ox = 0, oy = oy + 1 == ho ? (++b, 0) : oy + 1;
        }
        if constexpr (std::is_same_v<T, float>)
          K.gemm_small_k(ptrs.data(), r1 - r0, k, row, f, z + r0 * cout, cout);
      }
    });
    return;
  }
  // Tiles of patch rows small enough to stay in L2 between im2col and their GEMM.
  const int64_t tile = std::clamp<int64_t>((1 << 16) / kk, 16, 4096);
  const int64_t tiles = (rows + tile - 1) / tile;
  if (tiles >= 2 * g_threads) {  // each thread: im2col a tile, multiply it, next tile
    parallel_for(tiles, tile * kk * cout, [&](int64_t s, int64_t e) {
      std::vector<T> cols(size_t(tile * kk));
      for (int64_t t = s; t < e; ++t) {
        const int64_t r0 = t * tile, r1 = std::min(rows, r0 + tile);
        im2col(r0, r1, cols.data());
        gemm(cols.data(), f, z + r0 * cout, r1 - r0, kk, cout);
      }
    });
    return;
  }
  std::vector<T> cols(size_t(rows * kk));  // few rows: whole im2col, one threaded GEMM
  parallel_for(rows, kk, [&](int64_t s, int64_t e) { im2col(s, e, cols.data() + s * kk); });
  gemm(cols.data(), f, z, rows, kk, cout);
}

}  // namespace

void conv2d(const Array& a, const Array& wt, Array& out, int64_t n, int64_t h, int64_t w,
            int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t padding) {
  for (int64_t v : {n, h, w, cin, cout, k, stride, padding})
    if (v < 0 || v > INT32_MAX) fail("conv2d: arguments must be in [0, 2^31)");
  if (k < 1 || stride < 1) fail("conv2d: k and stride must be >= 1");
  if (h + 2 * padding < k || w + 2 * padding < k)
    fail("conv2d: kernel " + std::to_string(k) + " is larger than the padded input");
  const int64_t ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1;
  const int64_t hw = checked_mul(ho, wo);  // output pixels per image
  const int64_t kk = checked_mul(k * k, cin), rows = checked_mul(n, hw);
  check_blas_dims({rows, kk, cout});
  if (a.size() != checked_mul(n, checked_mul(h * w, cin)) || wt.size() != checked_mul(kk, cout) ||
      out.size() != checked_mul(rows, cout))
    fail("conv2d: buffer sizes " + std::to_string(a.size()) + ", " + std::to_string(wt.size()) +
         ", " + std::to_string(out.size()) + " do not match the shapes");
  if (a.dtype() != wt.dtype() || a.dtype() != out.dtype())
    fail(std::string("conv2d dtypes differ: ") + name(a.dtype()) + ", " + name(wt.dtype()) +
         ", out " + name(out.dtype()));
  visit_number(out.dtype(), "conv2d", [&](auto t) {
    using T = decltype(t);
    if (out.size() == 0) return;
    T* z = out.data<T>();
    if (kk == 0) return void(std::fill_n(z, out.size(), T(0)));
    const T *x = a.data<T>(), *f = wt.data<T>();
    MaybeRelease gil(checked_mul(out.size(), kk));
    conv2d_typed(x, f, z, n, h, w, cin, cout, k, stride, padding);
  });
}

}  // namespace needle_cpu
