// Batch normalization in one call each way (the optional batch_norm / batch_norm_grad
// capabilities), for training: core composes some twenty elementwise kernels and reductions
// otherwise. x is a compact (outer, channels, inner) buffer, (N, D) as (N, D, 1) and NCHW as
// (N, C, H * W); each channel's statistics run over its outer x inner values. Sums are taken
// in double, per channel (channels last: in a fixed number of row blocks, then added in block
// order); every value written is rounded to the handle's dtype as the contract spells out, so
// the numpy backend gives the same results.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ops.h"
#include "pool.h"

namespace needle_cpu {

namespace {

// Sizes and dtypes: every handle in `full` is x's size and dtype, every one in `channel` holds
// `channels` values of x's dtype, and x is float.
void check_norm(const char* kernel, const Array& x, std::initializer_list<const Array*> full,
                std::initializer_list<const Array*> channel, int64_t outer, int64_t channels,
                int64_t inner) {
  if (outer < 0 || channels < 0 || inner < 0 ||
      x.size() != checked_mul(checked_mul(outer, channels), inner))
    fail(std::string(kernel) + ": x holds " + std::to_string(x.size()) + " elements, not (" +
         std::to_string(outer) + ", " + std::to_string(channels) + ", " + std::to_string(inner) +
         ")");
  if (x.dtype() != DType::float32 && x.dtype() != DType::float64)
    fail(std::string(kernel) + " takes float32 or float64 handles, not " + name(x.dtype()));
  for (const Array* a : full) same(x, *a);
  for (const Array* a : channel)
    if (a->size() != channels || a->dtype() != x.dtype())
      fail(std::string(kernel) + ": a per-channel handle holds " + std::to_string(a->size()) +
           " " + name(a->dtype()) + " values, not " + std::to_string(channels) + " " +
           name(x.dtype()));
}

// The per-channel statistics in double of one thread's channels, kept to write the outputs.
struct Stats {
  double mean, var;
};

// Channel c's update of its running statistics, in double then rounded (the contract's).
template <class T>
void update_running(T* rm, T* rv, int64_t c, const Stats& st, double momentum) {
  rm[c] = T((1.0 - momentum) * double(rm[c]) + momentum * st.mean);
  rv[c] = T((1.0 - momentum) * double(rv[c]) + momentum * st.var);
}

// inner == 1 (channels last: rows of `channels` values). Splitting channels among threads
// would have each read every cache line of x for a sliver of it (16 channels: 16 passes), so
// rows are split instead: a fixed number of row blocks, set by the size alone, each sums its
// rows into its own partial per channel (in double), and the partials are added in block
// order, so every thread count gives the same bits. fn(row, acc) adds one row into acc
// (`width` doubles per block); the per-channel totals land in `total`.
template <class F>
void row_block_sums(int64_t outer, int64_t channels, int64_t width, std::vector<double>& total,
                    F fn) {
  const int64_t blocks = std::clamp<int64_t>(outer * channels / (1 << 14), 1, 8);
  std::vector<double> part(static_cast<size_t>(blocks * width), 0.0);
  parallel_for(blocks, (outer / blocks + 1) * channels * 4, [&](int64_t bs, int64_t be) {
    for (int64_t blk = bs; blk < be; ++blk) {
      double* __restrict acc = part.data() + blk * width;
      for (int64_t a = outer * blk / blocks; a < outer * (blk + 1) / blocks; ++a) fn(a, acc);
    }
  });
  total.assign(static_cast<size_t>(width), 0.0);
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t i = 0; i < width; ++i) total[size_t(i)] += part[size_t(blk * width + i)];
}

// The loops below run sums in independent lanes (one chain would wait on each add's latency)
// through __restrict pointers, so the compiler vectorizes them: with inner == 1 (the (N, D)
// case) a lane per channel along each row; otherwise, per channel, a lane per inner position
// down the outer rows, the lanes then summed in order.

}  // namespace

void batch_norm(const Array& x, const Array& weight, const Array& bias, Array& out, Array& mean,
                Array& invstd, Array& running_mean, Array& running_var, int64_t outer,
                int64_t channels, int64_t inner, double eps, double momentum) {
  const char* kernel = "batch_norm";
  check_norm(kernel, x, {&out}, {&weight, &bias, &mean, &invstd}, outer, channels, inner);
  if (momentum != 0)
    check_norm(kernel, x, {}, {&running_mean, &running_var}, outer, channels, inner);
  if (channels == 0) return;
  const double count = double(outer) * double(inner);
  visit(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_floating_point_v<T>) {
      const T* __restrict px = x.data<T>();
      const T *__restrict w = weight.data<T>(), *__restrict b = bias.data<T>();
      T* __restrict z = out.data<T>();
      T *__restrict m = mean.data<T>(), *__restrict inv = invstd.data<T>();
      T* rm = momentum != 0 ? running_mean.data<T>() : nullptr;
      T* rv = momentum != 0 ? running_var.data<T>() : nullptr;
      auto finish = [&](int64_t c, double sum, double squares) {
        const Stats st{sum, squares / count};  // sum is the mean already; var is biased
        m[c] = T(st.mean);
        inv[c] = T(1.0 / std::sqrt(st.var + eps));
        if (momentum != 0) update_running(rm, rv, c, st, momentum);
      };
      MaybeRelease gil(x.size() * 3);
      if (inner == 1) {
        const int64_t C = channels;
        std::vector<double> mu, sq;
        row_block_sums(outer, C, C, mu, [&](int64_t a, double* __restrict acc) {
          const T* __restrict xr = px + a * C;
          for (int64_t c = 0; c < C; ++c) acc[c] += double(xr[c]);
        });
        for (double& v : mu) v /= count;
        const double* __restrict mus = mu.data();
        row_block_sums(outer, C, C, sq, [&](int64_t a, double* __restrict acc) {
          const T* __restrict xr = px + a * C;
          for (int64_t c = 0; c < C; ++c) {
            const double v = double(xr[c]) - mus[c];
            acc[c] += v * v;
          }
        });
        for (int64_t c = 0; c < C; ++c) finish(c, mu[size_t(c)], sq[size_t(c)]);
        parallel_for(outer, C * 2, [&](int64_t s0, int64_t s1) {
          for (int64_t a = s0; a < s1; ++a) {
            const T* __restrict xr = px + a * C;
            T* __restrict zr = z + a * C;
            for (int64_t c = 0; c < C; ++c) zr[c] = T(T(xr[c] - m[c]) * inv[c]) * w[c] + b[c];
          }
        });
        return;
      }
      parallel_for(channels, outer * inner * 3, [&](int64_t cs, int64_t ce) {
        std::vector<double> lanes(static_cast<size_t>(inner));
        double* __restrict acc = lanes.data();
        for (int64_t c = cs; c < ce; ++c) {
          std::fill(acc, acc + inner, 0.0);
          for (int64_t a = 0; a < outer; ++a) {
            const T* __restrict xb = px + (a * channels + c) * inner;
            for (int64_t j = 0; j < inner; ++j) acc[j] += double(xb[j]);
          }
          double mu = 0;
          for (int64_t j = 0; j < inner; ++j) mu += acc[j];
          mu /= count;
          std::fill(acc, acc + inner, 0.0);
          for (int64_t a = 0; a < outer; ++a) {
            const T* __restrict xb = px + (a * channels + c) * inner;
            for (int64_t j = 0; j < inner; ++j) {
              const double v = double(xb[j]) - mu;
              acc[j] += v * v;
            }
          }
          double squares = 0;
          for (int64_t j = 0; j < inner; ++j) squares += acc[j];
          finish(c, mu, squares);
          const T mt = m[c], it = inv[c], wt = w[c], bt = b[c];
          for (int64_t a = 0; a < outer; ++a) {
            const T* __restrict xb = px + (a * channels + c) * inner;
            T* __restrict zb = z + (a * channels + c) * inner;
            for (int64_t j = 0; j < inner; ++j) zb[j] = T(T(xb[j] - mt) * it) * wt + bt;
          }
        }
      });
    }
  });
}

void batch_norm_grad(const Array& g, const Array& x, const Array& weight, const Array& mean,
                     const Array& invstd, Array& dx, Array& dweight, Array& dbias, int64_t outer,
                     int64_t channels, int64_t inner) {
  const char* kernel = "batch_norm_grad";
  check_norm(kernel, x, {&g, &dx}, {&weight, &mean, &invstd, &dweight, &dbias}, outer, channels,
             inner);
  if (channels == 0) return;
  const double count = double(outer) * double(inner);
  visit(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_floating_point_v<T>) {
      const T *__restrict px = x.data<T>(), *__restrict pg = g.data<T>();
      const T *__restrict w = weight.data<T>(), *__restrict m = mean.data<T>();
      const T* __restrict inv = invstd.data<T>();
      T* __restrict z = dx.data<T>();
      T *__restrict dw = dweight.data<T>(), *__restrict db = dbias.data<T>();
      MaybeRelease gil(x.size() * 3);
      if (inner == 1) {
        const int64_t C = channels;
        std::vector<double> sums;  // C sums of g, then C sums of g * xhat
        row_block_sums(outer, C, 2 * C, sums, [&](int64_t a, double* __restrict acc) {
          const T *__restrict xr = px + a * C, *__restrict gr = pg + a * C;
          double* __restrict aw = acc + C;
          for (int64_t c = 0; c < C; ++c) {
            acc[c] += double(gr[c]);
            aw[c] += double(gr[c] * T(T(xr[c] - m[c]) * inv[c]));
          }
        });
        std::vector<T> k(static_cast<size_t>(C) * 3);
        T *__restrict k1 = k.data(), *__restrict k2 = k1 + C, *__restrict k3 = k2 + C;
        for (int64_t c = 0; c < C; ++c) {
          const double sb = sums[size_t(c)], sw = sums[size_t(C + c)];
          db[c] = T(sb);
          dw[c] = T(sw);
          k1[c] = w[c] * inv[c];  // weight * invstd
          k2[c] = T(sb / count);  // mean of g
          k3[c] = T(sw / count);  // mean of g * xhat
        }
        parallel_for(outer, C * 3, [&](int64_t s0, int64_t s1) {
          for (int64_t a = s0; a < s1; ++a) {
            const T *__restrict xr = px + a * C, *__restrict gr = pg + a * C;
            T* __restrict zr = z + a * C;
            for (int64_t c = 0; c < C; ++c) {
              const T xhat = T(xr[c] - m[c]) * inv[c];
              zr[c] = k1[c] * T(T(gr[c] - k2[c]) - xhat * k3[c]);
            }
          }
        });
        return;
      }
      parallel_for(channels, outer * inner * 3, [&](int64_t cs, int64_t ce) {
        std::vector<double> lanes(static_cast<size_t>(inner) * 2);
        double *__restrict ab = lanes.data(), *__restrict aw = ab + inner;
        for (int64_t c = cs; c < ce; ++c) {
          const T mt = m[c], it = inv[c];
          std::fill(ab, ab + 2 * inner, 0.0);
          for (int64_t a = 0; a < outer; ++a) {
            const int64_t at = (a * channels + c) * inner;
            const T *__restrict xb = px + at, *__restrict gb = pg + at;
            for (int64_t j = 0; j < inner; ++j) {
              ab[j] += double(gb[j]);
              aw[j] += double(gb[j] * T(T(xb[j] - mt) * it));
            }
          }
          double sum_g = 0, sum_gx = 0;
          for (int64_t j = 0; j < inner; ++j) sum_g += ab[j];
          for (int64_t j = 0; j < inner; ++j) sum_gx += aw[j];
          db[c] = T(sum_g);
          dw[c] = T(sum_gx);
          const T k1 = w[c] * it, k2 = T(sum_g / count), k3 = T(sum_gx / count);
          for (int64_t a = 0; a < outer; ++a) {
            const int64_t at = (a * channels + c) * inner;
            const T *__restrict xb = px + at, *__restrict gb = pg + at;
            T* __restrict zb = z + at;
            for (int64_t j = 0; j < inner; ++j) {
              const T xhat = T(xb[j] - mt) * it;
              zb[j] = k1 * T(T(gb[j] - k2) - xhat * k3);
            }
          }
        }
      });
    }
  });
}

}  // namespace needle_cpu
