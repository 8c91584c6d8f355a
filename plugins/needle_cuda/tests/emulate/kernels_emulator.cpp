// Runs needle-cuda's real kernels and launchers (src/kernels.cuh, src/matmul.cuh) for every
// dtype on the CPU: one fiber per CUDA thread, blocks one after another, a barrier for
// __syncthreads and a per-warp exchange for __shfl_down_sync (cuda_shim.h); 2 emulated SMs so
// the grid-stride loops and the split reductions are exercised at small sizes. Every result is
// compared with a plain loop. This checks index math, bounds, launch configurations and
// barriers where no GPU exists; it says nothing about speed or the memory model.
// Build: c++ -std=c++17 -O1 kernels_emulator.cpp
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

// clang-format off: the shim stands in for the CUDA runtime, so it comes first
#include "cuda_shim.h"
#include "../../src/kernels.cuh"
// clang-format on

// ----------------------------------------------------------------------------- checks
using namespace needle_cuda;
std::mt19937 rng(0);
int failures = 0;

// Host storage of T (std::vector<bool> packs bits, so bools live in bytes).
template <typename T>
using Store = std::conditional_t<std::is_same_v<T, bool>, uint8_t, T>;

// Random values of T: normal floats, small integers (so integer products stay exact), 0/1 bools.
template <typename T>
std::vector<Store<T>> randn(size_t n) {
  std::vector<Store<T>> v(n);
  if constexpr (std::is_floating_point_v<T>) {
    std::normal_distribution<T> dist;
    for (auto& x : v) x = dist(rng);
  } else {
    std::uniform_int_distribution<int> dist(std::is_same_v<T, bool> ? 0 : -9,
                                            std::is_same_v<T, bool> ? 1 : 9);
    for (auto& x : v) x = static_cast<Store<T>>(dist(rng));
  }
  return v;
}

template <typename T>
const char* type_name() {
  return dtype_name(dtype_of<T>());
}

void report(bool ok, const std::string& what, double worst) {
  std::printf("%s %s (worst %.2e)\n", ok ? "ok  " : "FAIL", what.c_str(), worst);
  failures += !ok;
}

template <typename T>
void check_matmul(int batch, int m, int n, int p) {
  auto a = randn<T>(size_t(batch) * m * n), b = randn<T>(size_t(batch) * n * p);
  std::vector<T> c(size_t(batch) * m * p, T(77));
  launch_matmul<T>(a.data(), b.data(), c.data(), batch, m, n, p);
  double worst = 0;
  for (int z = 0; z < batch; ++z)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < p; ++j) {
        double ref = 0;
        for (int k = 0; k < n; ++k)
          ref += double(a[(size_t(z) * m + i) * n + k]) * double(b[(size_t(z) * n + k) * p + j]);
        const double got = double(c[(size_t(z) * m + i) * p + j]);
        worst = std::isnan(got) ? INFINITY
                                : std::max(worst, std::fabs(got - ref) / (1 + std::fabs(ref)));
      }
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-12;
  report(worst < tol,
         std::string("matmul ") + type_name<T>() + " batch=" + std::to_string(batch) +
             " m=" + std::to_string(m) + " n=" + std::to_string(n) + " p=" + std::to_string(p),
         worst);
}

template <typename T>
void check_reduce(index_t rows, index_t size) {
  auto a = randn<T>(size_t(rows * size));
  a[size_t(rows * size / 2)] = T(50);  // a maximum in the middle of a chunk
  std::vector<T> sum(rows, T(77)), max(rows, T(77));
  reduce_rows<T, SumOp>(a.data(), sum.data(), rows, size);
  reduce_rows<T, MaxOp>(a.data(), max.data(), rows, size);
  double worst = 0;
  bool max_ok = true;
  for (index_t r = 0; r < rows; ++r) {
    double ref = 0;
    T ref_max = a[r * size];
    for (index_t j = 0; j < size; ++j) {
      ref += double(a[r * size + j]);
      ref_max = std::max(ref_max, a[r * size + j]);
    }
    worst = std::isnan(double(sum[r]))
                ? INFINITY
                : std::max(worst, std::fabs(double(sum[r]) - ref) / (1 + std::sqrt(double(size))));
    max_ok = max_ok && max[r] == ref_max;
  }
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  report(worst < tol && max_ok,
         std::string("reduce ") + type_name<T>() + " rows=" + std::to_string(rows) +
             " size=" + std::to_string(size) + (max_ok ? "" : " (max wrong)"),
         worst);
}

// The view of base through (shape, strides, offset), by plain loops.
template <typename U>
std::vector<U> reference_view(const std::vector<U>& base, const Dims& shape, const Dims& strides,
                              int64_t offset) {
  index_t numel = 1;
  for (auto d : shape) numel *= d;
  std::vector<U> out(numel);
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

// compact, ewise_setitem and scalar_setitem through one view, for elements of width U.
template <typename U>
void check_views(const Dims& shape, const Dims& strides, int64_t offset) {
  const index_t size = 6000;
  std::vector<U> base(size);
  for (index_t i = 0; i < size; ++i) base[i] = U(i * 7 + 1);
  const View v = make_view("check", size, shape, strides, offset);
  const auto ref = reference_view(base, shape, strides, offset);
  std::vector<U> out(v.numel, U(0));
  launch_compact(base.data(), out.data(), v);
  bool ok = out == ref;
  // setitem: write new values through the view, then read them back
  std::vector<U> target = base, src(v.numel);
  for (index_t i = 0; i < v.numel; ++i) src[i] = U(ref[i] + 3);
  launch_ewise_setitem(src.data(), target.data(), v);
  ok = ok && reference_view(target, shape, strides, offset) == src;
  launch_scalar_setitem(U(5), target.data(), v);
  for (U x : reference_view(target, shape, strides, offset)) ok = ok && x == U(5);
  std::string text = "compact/setitem width=" + std::to_string(sizeof(U)) + " shape=(";
  for (auto d : shape) text += std::to_string(d) + ",";
  text += ") strides=(";
  for (auto s : strides) text += std::to_string(s) + ",";
  report(ok,
         text + ") offset=" + std::to_string(offset) + " merged ndim=" + std::to_string(v.s.ndim),
         0);
}

template <typename U>
void check_all_views() {
  check_views<U>({4, 3}, {1, 4}, 0);          // transpose
  check_views<U>({33, 65}, {1, 40}, 5);       // transpose, partial tiles
  check_views<U>({3, 40, 5}, {1, 15, 3}, 0);  // merges to a transpose with stride 3
  check_views<U>({2, 3, 4}, {12, 4, 1}, 0);   // contiguous: one dimension
  check_views<U>({3, 4}, {-4, -1}, 11);       // flipped
  check_views<U>({5, 4}, {0, 1}, 2);          // broadcast
  check_views<U>({2, 1, 3, 1, 2}, {6, 99, 2, 7, 1}, 0);
  check_views<U>({2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2},
                 {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048}, 0);
  check_views<U>({70, 80}, {80, 1}, 0);
  check_views<U>({60, 40}, {2, 120}, 3);  // generic 2-D, no unit stride
  check_views<U>({}, {}, 7);              // one element
}

// Elementwise kernels, with the packed path (aligned) and the element path (`shift` elements
// into the buffers, as memory imported through DLPack may be).
template <typename T>
void check_ewise(index_t n, int shift) {
  auto a = randn<T>(n + shift), b = randn<T>(n + shift);
  std::vector<T> out(n + shift, T(77)), scaled(n + shift, T(77));
  std::vector<bool> ge_ref(n);
  std::vector<uint8_t> ge(n + shift, 7);
  launch_map2(a.data() + shift, b.data() + shift, out.data() + shift, n, Add{}, "add");
  launch_map1(a.data() + shift, scaled.data() + shift, n, WithScalar<Mul, T>{Mul{}, T(3)}, "mul");
  launch_map2(a.data() + shift, b.data() + shift, reinterpret_cast<bool*>(ge.data()) + shift, n,
              Ge{}, "ge");
  bool ok = true;
  for (index_t i = shift; i < n + shift; ++i)
    ok = ok && out[i] == T(a[i] + b[i]) && scaled[i] == T(a[i] * T(3)) &&
         ge[i] == (a[i] >= b[i] ? 1 : 0);
  report(ok,
         std::string("ewise add / scalar mul / ge ") + type_name<T>() + " n=" + std::to_string(n) +
             " shift=" + std::to_string(shift),
         0);
}

// cast between every pair of dtypes of interest, against the scalar conversion of Convert.
template <typename From, typename To>
void check_cast(index_t n) {
  auto a = randn<From>(n);
  std::vector<Store<To>> out(n);
  const auto* x = reinterpret_cast<const From*>(a.data());
  auto* z = reinterpret_cast<To*>(out.data());
  launch_map1(x, z, n, Convert<To>{}, "cast");
  bool ok = true;
  for (index_t i = 0; i < n; ++i) ok = ok && z[i] == Convert<To>{}(x[i]);
  report(ok, std::string("cast ") + type_name<From>() + " -> " + type_name<To>(), 0);
}

void check_fill(index_t n) {
  std::vector<uint64_t> d(n + 1, 0);
  launch_fill(d.data() + 1, uint64_t(0x0102030405060708ull), n);  // unaligned for 16 bytes
  std::vector<uint8_t> b(n, 0);
  launch_fill(b.data(), uint8_t(1), n);
  bool ok = d[0] == 0;
  for (index_t i = 0; i < n; ++i) ok = ok && d[i + 1] == 0x0102030405060708ull && b[i] == 1;
  report(ok, "fill n=" + std::to_string(n), 0);
}

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  const int mm_cases[][4] = {
      {1, 1, 1, 1},      {1, 3, 5, 7},      {1, 4, 4, 4},     {1, 128, 16, 128}, {1, 129, 17, 130},
      {1, 130, 36, 127}, {1, 257, 64, 260}, {2, 33, 20, 66},  {1, 300, 0, 5},    {1, 1, 50, 1},
      {1, 1100, 8, 4},   {3, 20, 48, 200},  {1, 1200, 4, 300}};
  for (const auto& c : mm_cases) check_matmul<float>(c[0], c[1], c[2], c[3]);
  const int simple_cases[][4] = {{1, 1, 1, 1},    {1, 3, 5, 7},   {1, 64, 16, 64}, {1, 65, 17, 66},
                                 {2, 33, 20, 66}, {1, 300, 0, 5}, {1, 130, 40, 70}};
  for (const auto& c : simple_cases) {
    check_matmul<double>(c[0], c[1], c[2], c[3]);
    check_matmul<int32_t>(c[0], c[1], c[2], c[3]);
    check_matmul<int64_t>(c[0], c[1], c[2], c[3]);
  }
  // thread, warp (vec and not), block (one chunk, split into chunks, vec and not)
  const index_t red_cases[][2] = {{7, 1},     {5, 3},     {300, 16},  {3, 17},   {40, 64},
                                  {9, 2048},  {2, 2049},  {20, 3000}, {1, 4099}, {1, 40000},
                                  {1, 40003}, {3, 20000}, {16, 5000}};
  for (const auto& c : red_cases) check_reduce<float>(c[0], c[1]);
  for (const auto& c : red_cases) check_reduce<double>(c[0], c[1]);
  for (const auto& c : red_cases) check_reduce<int32_t>(c[0], c[1]);
  for (const auto& c : red_cases) check_reduce<int64_t>(c[0], c[1]);
  check_all_views<uint32_t>();
  check_all_views<uint8_t>();
  check_all_views<uint64_t>();
  for (index_t n : {1, 3, 4, 5, 1023, 20001}) {
    for (int shift : {0, 1}) {
      check_ewise<float>(n, shift);
      check_ewise<double>(n, shift);
      check_ewise<int32_t>(n, shift);
      check_ewise<int64_t>(n, shift);
    }
  }
  check_cast<float, int32_t>(1001);
  check_cast<double, float>(1001);
  check_cast<int64_t, double>(1001);
  check_cast<bool, float>(1001);
  check_cast<float, bool>(1001);
  check_cast<int64_t, int32_t>(1001);
  check_cast<double, int64_t>(1001);
  for (index_t n : {1, 17, 5000}) check_fill(n);
  std::printf("%d failures\n", failures);
  return failures != 0;
}
