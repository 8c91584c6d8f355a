// Batch normalization in one call each way (the optional batch_norm / batch_norm_grad
// capabilities), for training: core composes some twenty elementwise kernels and reductions
// otherwise. x is a compact (outer, channels, inner) buffer, (N, D) as (N, D, 1) and NCHW as
// (N, C, H * W); each channel's statistics run over its outer x inner values. Sums are taken
// in double, per channel, in the order of memory; every value written is rounded to the
// handle's dtype as the contract spells out, so the numpy backend gives the same results.

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
      parallel_for(channels, outer * inner * 3, [&](int64_t cs, int64_t ce) {
        const int64_t width = ce - cs;
        if (inner == 1) {
          std::vector<double> buf(static_cast<size_t>(width) * 2, 0.0);
          double *__restrict s = buf.data(), *__restrict d = s + width;
          for (int64_t a = 0; a < outer; ++a) {
            const T* __restrict xr = px + a * channels + cs;
            for (int64_t c = 0; c < width; ++c) s[c] += double(xr[c]);
          }
          for (int64_t c = 0; c < width; ++c) s[c] /= count;
          for (int64_t a = 0; a < outer; ++a) {
            const T* __restrict xr = px + a * channels + cs;
            for (int64_t c = 0; c < width; ++c) {
              const double v = double(xr[c]) - s[c];
              d[c] += v * v;
            }
          }
          for (int64_t c = 0; c < width; ++c) finish(cs + c, s[c], d[c]);
          const T *__restrict mc = m + cs, *__restrict ic = inv + cs;
          const T *__restrict wc = w + cs, *__restrict bc = b + cs;
          for (int64_t a = 0; a < outer; ++a) {
            const T* __restrict xr = px + a * channels + cs;
            T* __restrict zr = z + a * channels + cs;
            for (int64_t c = 0; c < width; ++c) zr[c] = T(T(xr[c] - mc[c]) * ic[c]) * wc[c] + bc[c];
          }
          return;
        }
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
      parallel_for(channels, outer * inner * 3, [&](int64_t cs, int64_t ce) {
        const int64_t width = ce - cs;
        if (inner == 1) {
          std::vector<double> buf(static_cast<size_t>(width) * 2, 0.0);
          double *__restrict sb = buf.data(), *__restrict sw = sb + width;
          const T *__restrict mc = m + cs, *__restrict ic = inv + cs;
          for (int64_t a = 0; a < outer; ++a) {
            const T *__restrict xr = px + a * channels + cs, *__restrict gr = pg + a * channels + cs;
            for (int64_t c = 0; c < width; ++c) {
              sb[c] += double(gr[c]);
              sw[c] += double(gr[c] * T(T(xr[c] - mc[c]) * ic[c]));
            }
          }
          std::vector<T> k(static_cast<size_t>(width) * 3);
          T *__restrict k1 = k.data(), *__restrict k2 = k1 + width, *__restrict k3 = k2 + width;
          for (int64_t c = 0; c < width; ++c) {
            db[cs + c] = T(sb[c]);
            dw[cs + c] = T(sw[c]);
            k1[c] = w[cs + c] * ic[c];  // weight * invstd
            k2[c] = T(sb[c] / count);   // mean of g
            k3[c] = T(sw[c] / count);   // mean of g * xhat
          }
          for (int64_t a = 0; a < outer; ++a) {
            const T *__restrict xr = px + a * channels + cs, *__restrict gr = pg + a * channels + cs;
            T* __restrict zr = z + a * channels + cs;
            for (int64_t c = 0; c < width; ++c) {
              const T xhat = T(xr[c] - mc[c]) * ic[c];
              zr[c] = k1[c] * T(T(gr[c] - k2[c]) - xhat * k3[c]);
            }
          }
          return;
        }
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
