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

// The sizes of one convolution: NHWC input (n, h, w, cin), weight (k, k, cin, cout), output
// (n, ho, wo, cout); its im2col matrix has rows = n * ho * wo rows of kk = k * k * cin values.
struct ConvShape {
  int64_t n, h, w, cin, cout, k, stride, padding, ho, wo, hw, kk, rows;
  ConvShape(int64_t n, int64_t h, int64_t w, int64_t cin, int64_t cout, int64_t k,
            int64_t stride, int64_t padding)
      : n(n), h(h), w(w), cin(cin), cout(cout), k(k), stride(stride), padding(padding),
        ho((h + 2 * padding - k) / stride + 1), wo((w + 2 * padding - k) / stride + 1),
        hw(ho * wo), kk(k * k * cin), rows(n * ho * wo) {}
};

// Patch rows [r0, r1) of x's im2col matrix into dst (kk values each, zeros in the padding).
template <class T>
void im2col(const T* x, const ConvShape& c, int64_t r0, int64_t r1, T* __restrict dst) {
  const int64_t k = c.k, cin = c.cin, w = c.w, h = c.h, row = k * cin;  // a patch row
  int64_t b = r0 / c.hw, oy = r0 / c.wo % c.ho, ox = r0 % c.wo;
  for (int64_t g = r0; g < r1; ++g) {
    const int64_t ix0 = ox * c.stride - c.padding;
    const bool inside_x = ix0 >= 0 && ix0 + k <= w;
    for (int64_t ky = 0; ky < k; ++ky, dst += row) {
      const int64_t iy = oy * c.stride - c.padding + ky;
      const T* __restrict src = x + ((b * h + iy) * w + ix0) * cin;
      if (iy < 0 || iy >= h)  // short rows: plain loops beat memcpy calls
        for (int64_t j = 0; j < row; ++j) dst[j] = T(0);
      else if (inside_x)
        for (int64_t j = 0; j < row; ++j) dst[j] = src[j];
      else
        for (int64_t kx = 0; kx < k; ++kx) {
          const bool inside = ix0 + kx >= 0 && ix0 + kx < w;
          for (int64_t ch = 0; ch < cin; ++ch) dst[kx * cin + ch] = inside ? src[kx * cin + ch] : T(0);
        }
    }
    if (++ox == c.wo) ox = 0, oy = oy + 1 == c.ho ? (++b, 0) : oy + 1;  // next output pixel
  }
}

// ceil(total / cap) equal pieces of at most cap (and at least min_pieces when total allows
// pieces of min_size): the piece size. Depends on the sizes only, never on the thread count,
// and the pieces come out even, so no thread is left with a big remainder (a batch of 2,048
// patch rows cut 1,820 + 228 ran on 2 threads no faster than on 1).
int64_t even_piece(int64_t total, int64_t cap, int64_t min_pieces, int64_t min_size) {
  int64_t pieces = (total + cap - 1) / cap;
  pieces = std::max(pieces, std::min(min_pieces, total / std::max<int64_t>(min_size, 1)));
  pieces = std::max<int64_t>(pieces, 1);
  return std::max<int64_t>(1, (total + pieces - 1) / pieces);  // >= 1 even for total 0
}

// One output pixel whose window holds the whole (padded) image: a 3x3 convolution of 1x1 or
// 2x2 maps, the last layers of a small-image network. Input pixel (iy, ix) meets tap
// (iy + padding, ix + padding) alone and every other tap meets padding, so the convolution is
// one product with those taps' rows of the weight: no im2col, none of the zeros (8 of 9 taps
// on a 1x1 map).
bool single_window(const ConvShape& c) {
  return c.ho == 1 && c.wo == 1 && c.h + c.padding <= c.k && c.w + c.padding <= c.k;
}

// The weight rows of the taps the image meets, (h * w * cin, cout) in input pixel order: the
// weight's own memory when the image is one pixel, else copied into `copy`.
template <class T>
const T* window_taps(const T* f, const ConvShape& c, std::vector<T>& copy) {
  const int64_t block = c.cin * c.cout;  // one tap's (cin, cout) rows
  auto tap = [&](int64_t iy, int64_t ix) {
    return f + ((iy + c.padding) * c.k + ix + c.padding) * block;
  };
  if (c.h == 1 && c.w == 1) return tap(0, 0);
  copy.resize(static_cast<size_t>(c.h * c.w * block));
  for (int64_t iy = 0; iy < c.h; ++iy)
    for (int64_t ix = 0; ix < c.w; ++ix)
      std::copy_n(tap(iy, ix), block, copy.data() + (iy * c.w + ix) * block);
  return copy.data();
}

// NHWC input x (n, h, w, cin), weight f (k, k, cin, cout), zero padding, into z: im2col rows
// of kk = k*k*cin values, then GEMM of those rows with the (kk, cout) weight.
template <class T>
void conv2d_typed(const T* x, const T* f, T* z, int64_t n, int64_t h, int64_t w, int64_t cin,
                  int64_t cout, int64_t k, int64_t stride, int64_t padding) {
  const ConvShape c(n, h, w, cin, cout, k, stride, padding);
  const int64_t ho = c.ho, wo = c.wo, hw = c.hw, kk = c.kk, rows = c.rows;
  if (k == 1 && stride == 1 && padding == 0) return gemm(x, f, z, rows, cin, cout);
  if (single_window(c)) {  // (n, h * w * cin) images times the taps they meet
    std::vector<T> copy;
    return gemm(x, window_taps(f, c, copy), z, n, h * w * cin, cout);
  }
  const int64_t row = k * cin;  // one kernel row of a patch: contiguous in the input
  // A weight that fits in L2 (k*k*cin*cout <= 128K floats, most CNN layers): our register-tiled
  // GEMM reads each patch as k rows of k*cin floats straight from the input; only patches
  // that cross the padding are copied (with their zeros), so it pays where at least half the
  // patches lie inside the image. Bigger weights, or small padded images: im2col + OpenBLAS.
  auto inside = [&](int64_t size, int64_t out) {  // output positions whose window is inside
    int64_t count = 0;
    for (int64_t o = 0; o < out; ++o)
      count += o * stride - padding >= 0 && o * stride - padding + k <= size;
    return count;
  };
  if (std::is_same_v<T, float> && kk * cout <= (1 << 17) &&
      2 * inside(h, ho) * inside(w, wo) >= hw) {
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
            im2col(x, c, g, g + 1, patch);
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
  // Even tiles of patch rows, small enough to stay in L2 between im2col and their GEMM, and
  // at least two per thread where there are rows enough: each thread im2cols a tile,
  // multiplies it, takes the next. (One tile: a GEMM threaded by rows.) A row's values do not
  // depend on the tiling: every GEMM sums over the same kk in the same order.
  const int64_t cap = std::clamp<int64_t>((1 << 18) / kk, 16, 8192);
  const int64_t tile = even_piece(rows, cap, 2 * g_threads.load(), 64);
  const int64_t tiles = (rows + tile - 1) / tile;
  parallel_for(tiles, tile * kk * cout, [&](int64_t s, int64_t e) {
    std::vector<T> cols(size_t(tile * kk));
    for (int64_t t = s; t < e; ++t) {
      const int64_t r0 = t * tile, r1 = std::min(rows, r0 + tile);
      im2col(x, c, r0, r1, cols.data());
      gemm(cols.data(), f, z + r0 * cout, r1 - r0, kk, cout);
    }
  });
}

// The weight gradient: dw (kk, cout) = sum over the output pixels of patch^T @ grad, tile by
// tile of im2col rows (never the whole matrix). The tiles are cut into kChunks contiguous
// chunks, each summed into its own partial in tile order, the partials then added in chunk
// order: the same bits whichever thread takes which chunk, and at any thread count.
constexpr int64_t kChunks = 8;

template <class T>
void conv2d_grad_weight_typed(const T* x, const T* g, T* dw, const ConvShape& c) {
  const int64_t kk = c.kk, cout = c.cout, size = kk * cout;
  if (single_window(c)) {  // the taps the image meets: images^T @ grad; the others are zero
    const int64_t block = c.cin * cout, sub = c.h * c.w * block;
    std::fill_n(dw, size, T(0));
    std::vector<T> taps(static_cast<size_t>(sub));
    gemm(x, g, taps.data(), c.h * c.w * c.cin, c.n, cout, true, false);
    for (int64_t iy = 0; iy < c.h; ++iy)
      for (int64_t ix = 0; ix < c.w; ++ix)
        std::copy_n(taps.data() + (iy * c.w + ix) * block, block,
                    dw + ((iy + c.padding) * c.k + ix + c.padding) * block);
    return;
  }
  const int64_t cap = std::clamp<int64_t>((1 << 18) / std::max<int64_t>(kk, 1), 16, 8192);
  const int64_t tile = even_piece(c.rows, cap, kChunks, 64);
  const int64_t tiles = (c.rows + tile - 1) / tile, chunks = std::min(kChunks, tiles);
  std::vector<T> partials(static_cast<size_t>(chunks * size), T(0));
  parallel_for(chunks, tiles / chunks * tile * size, [&](int64_t s, int64_t e) {
    std::vector<T> cols(static_cast<size_t>(tile * kk)), prod(static_cast<size_t>(size));
    for (int64_t ch = s; ch < e; ++ch) {
      T* __restrict acc = partials.data() + ch * size;
      for (int64_t t = tiles * ch / chunks; t < tiles * (ch + 1) / chunks; ++t) {
        const int64_t r0 = t * tile, r1 = std::min(c.rows, r0 + tile);
        im2col(x, c, r0, r1, cols.data());
        // cols (r1 - r0, kk) read transposed, times the tile's gradient rows (r1 - r0, cout)
        gemm(cols.data(), g + r0 * cout, prod.data(), kk, r1 - r0, cout, true, false);
        const T* __restrict p = prod.data();
        for (int64_t i = 0; i < size; ++i) acc[i] += p[i];
      }
    }
  });
  std::copy_n(partials.data(), size, dw);
  for (int64_t ch = 1; ch < chunks; ++ch) {
    const T* __restrict p = partials.data() + ch * size;
    for (int64_t i = 0; i < size; ++i) dw[i] += p[i];
  }
}

// The input gradient: each output pixel's gradient row times the weight, transposed, gives
// the gradient of its patch (kk values), added back where the patch came from (col2im; the
// padding's share dropped). Images are independent: the batch is cut into fixed groups of
// whole images (one GEMM each, rows enough to keep it efficient), which threads take whole,
// so each image's sums run in one order: output pixels, then kernel rows and columns.
template <class T>
void conv2d_grad_input_typed(const T* g, const T* f, T* dx, const ConvShape& c) {
  const int64_t kk = c.kk, cin = c.cin, k = c.k, image = c.h * c.w * cin;
  if (single_window(c)) {  // grad (n, cout) @ the taps' rows transposed: every input pixel
    std::vector<T> copy;
    return gemm(g, window_taps(f, c, copy), dx, c.n, c.cout, image, false, true);
  }
  const int64_t tile = std::clamp<int64_t>((1 << 18) / std::max<int64_t>(kk, 1), 16, 8192);
  const int64_t cap = std::max<int64_t>(1, tile / std::max<int64_t>(c.hw, 1));  // images
  const int64_t per_group = even_piece(c.n, cap, kChunks, std::max<int64_t>(1, 64 / c.hw));
  const int64_t groups = (c.n + per_group - 1) / per_group;
  std::fill_n(dx, c.n * image, T(0));
  parallel_for(groups, per_group * c.hw * kk * c.cout, [&](int64_t s, int64_t e) {
    std::vector<T> cols(static_cast<size_t>(std::min(per_group, c.n) * c.hw * kk));
    for (int64_t grp = s; grp < e; ++grp) {
      const int64_t b0 = grp * per_group, b1 = std::min(c.n, b0 + per_group);
      // the group's (rows, cout) gradient rows times the (kk, cout) weight read transposed
      gemm(g + b0 * c.hw * c.cout, f, cols.data(), (b1 - b0) * c.hw, c.cout, kk, false, true);
      for (int64_t b = b0; b < b1; ++b) {
        T* __restrict out = dx + b * image;
        for (int64_t r = 0; r < c.hw; ++r) {
          const int64_t oy = r / c.wo, ox = r % c.wo;
          const T* __restrict patch = cols.data() + ((b - b0) * c.hw + r) * kk;
          for (int64_t ky = 0; ky < k; ++ky) {
            const int64_t iy = oy * c.stride - c.padding + ky;
            if (iy < 0 || iy >= c.h) continue;
            for (int64_t kx = 0; kx < k; ++kx) {
              const int64_t ix = ox * c.stride - c.padding + kx;
              if (ix < 0 || ix >= c.w) continue;
              T* __restrict to = out + (iy * c.w + ix) * cin;
              const T* __restrict from = patch + (ky * k + kx) * cin;
              for (int64_t ch = 0; ch < cin; ++ch) to[ch] += from[ch];
            }
          }
        }
      }
    }
  });
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


namespace {

// The checked sizes of a convolution's gradient kernel.
ConvShape conv_shape(const char* kernel, int64_t n, int64_t h, int64_t w, int64_t cin,
                     int64_t cout, int64_t k, int64_t stride, int64_t padding) {
  for (int64_t v : {n, h, w, cin, cout, k, stride, padding})
    if (v < 0 || v > INT32_MAX) fail(std::string(kernel) + ": arguments must be in [0, 2^31)");
  if (k < 1 || stride < 1) fail(std::string(kernel) + ": k and stride must be >= 1");
  if (h + 2 * padding < k || w + 2 * padding < k)
    fail(std::string(kernel) + ": kernel " + std::to_string(k) +
         " is larger than the padded input");
  const ConvShape c(n, h, w, cin, cout, k, stride, padding);
  check_blas_dims({c.rows, c.kk, cout});
  checked_mul(checked_mul(c.rows, c.kk), cout);
  return c;
}

void same_conv_dtypes(const char* kernel, const Array& a, const Array& b, const Array& out) {
  if (a.dtype() != b.dtype() || a.dtype() != out.dtype())
    fail(std::string(kernel) + " dtypes differ: " + name(a.dtype()) + ", " + name(b.dtype()) +
         ", out " + name(out.dtype()));
}

}  // namespace

void conv2d_grad_weight(const Array& a, const Array& grad, Array& out, int64_t n, int64_t h,
                        int64_t w, int64_t cin, int64_t cout, int64_t k, int64_t stride,
                        int64_t padding) {
  const char* kernel = "conv2d_grad_weight";
  const ConvShape c = conv_shape(kernel, n, h, w, cin, cout, k, stride, padding);
  if (a.size() != checked_mul(n, checked_mul(h * w, cin)) ||
      grad.size() != checked_mul(c.rows, cout) || out.size() != checked_mul(c.kk, cout))
    fail(std::string(kernel) + ": buffer sizes " + std::to_string(a.size()) + ", " +
         std::to_string(grad.size()) + ", " + std::to_string(out.size()) +
         " do not match the shapes");
  same_conv_dtypes(kernel, a, grad, out);
  visit_number(out.dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    T* z = out.data<T>();
    if (out.size() == 0) return;
    if (c.rows == 0) return void(std::fill_n(z, out.size(), T(0)));
    MaybeRelease gil(checked_mul(checked_mul(c.rows, c.kk), cout));
    conv2d_grad_weight_typed(a.data<T>(), grad.data<T>(), z, c);
  });
}


void conv2d_grad_input(const Array& grad, const Array& weight, Array& out, int64_t n, int64_t h,
                       int64_t w, int64_t cin, int64_t cout, int64_t k, int64_t stride,
                       int64_t padding) {
  const char* kernel = "conv2d_grad_input";
  const ConvShape c = conv_shape(kernel, n, h, w, cin, cout, k, stride, padding);
  if (out.size() != checked_mul(n, checked_mul(h * w, cin)) ||
      grad.size() != checked_mul(c.rows, cout) || weight.size() != checked_mul(c.kk, cout))
    fail(std::string(kernel) + ": buffer sizes " + std::to_string(grad.size()) + ", " +
         std::to_string(weight.size()) + ", " + std::to_string(out.size()) +
         " do not match the shapes");
  same_conv_dtypes(kernel, grad, weight, out);
  visit_number(out.dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    if (out.size() == 0) return;
    MaybeRelease gil(checked_mul(checked_mul(c.rows, c.kk), cout));
    conv2d_grad_input_typed(grad.data<T>(), weight.data<T>(), out.data<T>(), c);
  });
}

}  // namespace needle_cpu
