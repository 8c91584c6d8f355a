// Runs needle-cuda's real kernels and launchers (src/kernels.cuh, src/matmul.cuh) on the CPU:
// one std::thread per CUDA thread, blocks one after another, a barrier for __syncthreads and a
// per-warp exchange for __shfl_down_sync; 2 emulated SMs so the grid-stride loops and the split
// reductions are exercised at small sizes. Every result is compared with a plain loop. This
// checks index math, bounds and launch configuration where no GPU exists; it says nothing about
// speed or the memory model. Build: c++ -std=c++20 -O1 -pthread kernels_emulator.cpp
// (cuda_shim.h holds the emulation).
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda_shim.h"
#include "../../src/kernels.cuh"

// ----------------------------------------------------------------------------- checks
using namespace needle_cuda;
std::mt19937 rng(0);
int failures = 0;

std::vector<float> randn(size_t n) {
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

void report(bool ok, const std::string& what, double worst) {
  std::printf("%s %s (worst %.2e)\n", ok ? "ok  " : "FAIL", what.c_str(), worst);
  failures += !ok;
}

void check_matmul(int batch, int m, int n, int p) {
  auto a = randn(size_t(batch) * m * n), b = randn(size_t(batch) * n * p);
  std::vector<float> c(size_t(batch) * m * p, NAN);
  launch_matmul(a.data(), b.data(), c.data(), batch, m, n, p);
  double worst = 0;
  for (int z = 0; z < batch; ++z)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < p; ++j) {
        double ref = 0;
        for (int k = 0; k < n; ++k)
          ref += double(a[(size_t(z) * m + i) * n + k]) * b[(size_t(z) * n + k) * p + j];
        const double got = c[(size_t(z) * m + i) * p + j];
        worst = std::isnan(got) ? INFINITY
                                : std::max(worst, std::fabs(got - ref) / (1 + std::fabs(ref)));
      }
  report(worst < 1e-4,
         "matmul batch=" + std::to_string(batch) + " m=" + std::to_string(m) +
             " n=" + std::to_string(n) + " p=" + std::to_string(p),
         worst);
}

void check_reduce(index_t rows, index_t size) {
  auto a = randn(size_t(rows * size));
  a[size_t(rows * size / 2)] = 50.f;  // a maximum in the middle of a chunk
  std::vector<float> sum(rows, NAN), max(rows, NAN);
  reduce_rows<SumOp>(a.data(), sum.data(), rows, size);
  reduce_rows<MaxOp>(a.data(), max.data(), rows, size);
  double worst = 0;
  bool max_ok = true;
  for (index_t r = 0; r < rows; ++r) {
    double ref = 0;
    float ref_max = -INFINITY;
    for (index_t j = 0; j < size; ++j) {
      ref += a[r * size + j];
      ref_max = std::max(ref_max, a[r * size + j]);
    }
    worst = std::isnan(sum[r])
                ? INFINITY
                : std::max(worst, std::fabs(sum[r] - ref) / (1 + std::sqrt(double(size))));
    max_ok = max_ok && max[r] == ref_max;
  }
  report(worst < 1e-5 && max_ok,
         "reduce rows=" + std::to_string(rows) + " size=" + std::to_string(size) +
             (max_ok ? "" : " (max wrong)"),
         worst);
}

// The view of base through (shape, strides, offset), by plain loops.
std::vector<float> reference_view(const std::vector<float>& base, const Dims& shape,
                                  const Dims& strides, int64_t offset) {
  index_t numel = 1;
  for (auto d : shape) numel *= d;
  std::vector<float> out(numel);
  for (index_t i = 0; i < numel; ++i) {
    index_t rest = i, at = offset;
    for (int d = int(shape.size()) - 1; d >= 0; --d) {
      at += rest % shape[d] * strides[d];
      rest /= shape[d];
    }
    out[i] = base[at];
  }
  return out;
}

void check_views(const Dims& shape, const Dims& strides, int64_t offset) {
  const index_t size = 6000;
  std::vector<float> base(size);
  for (index_t i = 0; i < size; ++i) base[i] = float(i);
  const View v = make_view("check", size, shape, strides, offset);
  const auto ref = reference_view(base, shape, strides, offset);
  std::vector<float> out(v.numel, NAN);
  launch_compact(base.data(), out.data(), v);
  bool ok = out == ref;
  // setitem: write -(value) through the view, then read it back
  std::vector<float> target = base, src(v.numel);
  for (index_t i = 0; i < v.numel; ++i) src[i] = -ref[i] - 1;
  launch_ewise_setitem(src.data(), target.data(), v);
  ok = ok && reference_view(target, shape, strides, offset) == src;
  launch_scalar_setitem(7.5f, target.data(), v);
  for (float x : reference_view(target, shape, strides, offset)) ok = ok && x == 7.5f;
  std::string text = "compact/setitem shape=(";
  for (auto d : shape) text += std::to_string(d) + ",";
  text += ") strides=(";
  for (auto s : strides) text += std::to_string(s) + ",";
  report(ok,
         text + ") offset=" + std::to_string(offset) + " merged ndim=" + std::to_string(v.s.ndim),
         0);
}

void check_ewise(index_t n) {
  auto a = randn(n), b = randn(n);
  std::vector<float> out(n, NAN), scaled(n, NAN);
  launch_ewise<Add>(a.data(), b.data(), out.data(), n, "add");
  launch_unary(a.data(), scaled.data(), n, WithScalar<Mul>{Mul{}, 3.f}, "scalar_mul");
  bool ok = true;
  for (index_t i = 0; i < n; ++i) ok = ok && out[i] == a[i] + b[i] && scaled[i] == a[i] * 3.f;
  report(ok, "ewise add / scalar mul n=" + std::to_string(n), 0);
}

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  const int mm_cases[][4] = {
      {1, 1, 1, 1},      {1, 3, 5, 7},      {1, 4, 4, 4},     {1, 128, 16, 128}, {1, 129, 17, 130},
      {1, 130, 36, 127}, {1, 257, 64, 260}, {2, 33, 20, 66},  {1, 300, 0, 5},    {1, 1, 50, 1},
      {1, 1100, 8, 4},   {3, 20, 48, 200},  {1, 1200, 4, 300}};
  for (const auto& c : mm_cases) check_matmul(c[0], c[1], c[2], c[3]);
  // thread, warp (vec and not), block (one chunk, split into chunks, vec and not)
  const index_t red_cases[][2] = {{7, 1},     {5, 3},     {300, 16},  {3, 17},   {40, 64},
                                  {9, 2048},  {2, 2049},  {20, 3000}, {1, 4099}, {1, 40000},
                                  {1, 40003}, {3, 20000}, {16, 5000}};
  for (const auto& c : red_cases) check_reduce(c[0], c[1]);
  check_views({4, 3}, {1, 4}, 0);          // transpose
  check_views({33, 65}, {1, 40}, 5);       // transpose, partial tiles
  check_views({3, 40, 5}, {1, 15, 3}, 0);  // merges to a transpose with stride 3
  check_views({2, 3, 4}, {12, 4, 1}, 0);   // contiguous: one dimension
  check_views({3, 4}, {-4, -1}, 11);       // flipped
  check_views({5, 4}, {0, 1}, 2);          // broadcast
  check_views({2, 1, 3, 1, 2}, {6, 99, 2, 7, 1}, 0);
  check_views({2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2},
              {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048}, 0);
  check_views({70, 80}, {80, 1}, 0);
  check_views({60, 40}, {2, 120}, 3);  // generic 2-D, no unit stride
  check_views({}, {}, 7);              // one element
  for (index_t n : {1, 3, 4, 5, 1023, 20001}) check_ewise(n);
  std::printf("%d failures\n", failures);
  return failures != 0;
}
