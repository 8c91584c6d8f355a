// Elementwise ops (SIMD through the table K, powers through libm) and reductions.

#include <algorithm>
#include <cmath>
#include <vector>

#include "isa.h"
#include "ops.h"
#include "pool.h"

namespace needle_cpu {

void binary(int op, const Array& a, const Array& b, Array& out) {
  same_size(a, b, out);
  const float *x = a.data(), *y = b.data();
  float* z = out.data();
  MaybeRelease gil(out.size());
  parallel_for(out.size(), 1, [&](int64_t s, int64_t e) {
    K.binary(op, x + s, y + s, z + s, e - s);
  });
}

void scalar(int op, const Array& a, float val, Array& out) {
  same_size(a, out);
  const float* x = a.data();
  float* z = out.data();
  MaybeRelease gil(out.size());
  parallel_for(out.size(), 1, [&](int64_t s, int64_t e) {
    K.scalar(op, x + s, val, z + s, e - s);
  });
}

// f(x[i]) or f(x[i], y[i]) elementwise, for what SIMD does not cover (powers).
template <class F>
void map_scalar(const float* x, const float* y, float* z, int64_t n, F f) {
  MaybeRelease gil(n * 8);
  parallel_for(n, 8, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) z[i] = f(x[i], y ? y[i] : 0.f);
  });
}

void scalar_power(const Array& a, float val, Array& out) {
  same_size(a, out);
  const float* x = a.data();
  float* z = out.data();
  if (val == 2.f) return scalar(SQUARE, a, val, out);
  if (val == 1.f) return map_scalar(x, nullptr, z, a.size(), [](float v, float) { return v; });
  if (val == 0.5f)
    return map_scalar(x, nullptr, z, a.size(), [](float v, float) { return std::sqrt(v); });
  if (val == -1.f)
    return map_scalar(x, nullptr, z, a.size(), [](float v, float) { return 1.f / v; });
  map_scalar(x, nullptr, z, a.size(), [val](float v, float) { return std::pow(v, val); });
}

void ewise_power(const Array& a, const Array& b, Array& out) {
  same_size(a, b, out);
  map_scalar(a.data(), b.data(), out.data(), a.size(),
             [](float v, float p) { return std::pow(v, p); });
}

void unary(int op, const Array& a, Array& out) {
  same_size(a, out);
  const float* x = a.data();
  float* z = out.data();
  MaybeRelease gil(out.size() * 4);
  parallel_for(out.size(), 4, [&](int64_t s, int64_t e) { K.unary(op, x + s, z + s, e - s); });
}

// out[i] = reduction of row i of a (rows of reduce_size). Long rows are cut into blocks
// combined in double (sum) so 16M-element sums stay accurate, and split across threads.
template <bool Sum>
void reduce(const Array& a, Array& out, int64_t reduce_size) {
  if (reduce_size <= 0 || a.size() != checked_mul(out.size(), reduce_size))
    fail("cannot reduce " + std::to_string(a.size()) + " elements into " +
         std::to_string(out.size()) + " by " + std::to_string(reduce_size));
  const int64_t rows = out.size(), r = reduce_size;
  if (rows == 0) return;
  const float* x = a.data();
  float* z = out.data();
  MaybeRelease gil(a.size());
  constexpr int64_t B = 4096;
  auto block = [](const float* p, int64_t len) {
    return Sum ? K.sum_block(p, len) : K.max_block(p, len);
  };
  if (rows >= g_threads || r < B * 4) {
    parallel_for(rows, r, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const float* p = x + i * r;
        if (r <= B) {
          z[i] = block(p, r);
          continue;
        }
        double acc = Sum ? 0.0 : double(p[0]);
        for (int64_t j = 0; j < r; j += B) {
          float v = block(p + j, std::min(B, r - j));
          acc = Sum ? acc + v : (v >= acc || v != v ? v : acc);
        }
        z[i] = float(acc);
      }
    });
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {  // few long rows: split each across the threads
    const float* p = x + i * r;
    const int64_t blocks = (r + B - 1) / B;
    std::vector<double> part(static_cast<size_t>(blocks));
    parallel_for(blocks, B, [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) part[j] = block(p + j * B, std::min(B, r - j * B));
    });
    double acc = Sum ? 0.0 : part[0];
    for (double v : part) acc = Sum ? acc + v : (v >= acc || v != v ? v : acc);
    z[i] = float(acc);
  }
}

template void reduce<true>(const Array&, Array&, int64_t);
template void reduce<false>(const Array&, Array&, int64_t);

}  // namespace needle_cpu
