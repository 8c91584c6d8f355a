// Runs the real matmul kernel (src/matmul.cuh) on the CPU, one std::thread per CUDA thread and
// a barrier for __syncthreads, and compares it with a naive product. It checks the kernel's
// index math (tiling, block order, bounds, both load paths) where no GPU exists; it says
// nothing about speed or memory-model details. Build: c++ -std=c++20 -O1 -pthread.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads, blocks)
#define __shared__ static  // blocks run one at a time, so a static is one block's shared memory
#define __align__(n) __attribute__((aligned(n)))

struct float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
thread_local Dim3 threadIdx, blockIdx;
std::barrier<>* block_barrier = nullptr;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
using std::min;

#include "../../src/matmul.cuh"

using needle_cuda::mm::matmul_kernel;

template <bool kVec>
void launch(unsigned tiles, unsigned batch, const float* a, const float* b, float* c, int m, int n,
            int p) {
  const int threads = needle_cuda::mm::THREADS;
  for (unsigned z = 0; z < batch; ++z) {
    for (unsigned x = 0; x < tiles; ++x) {
      std::barrier<> barrier(threads);
      block_barrier = &barrier;
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([=] {
          threadIdx.x = t;
          blockIdx.x = x;
          blockIdx.z = z;
          matmul_kernel<kVec>(a, b, c, m, n, p);
        });
      }
      for (auto& th : pool) th.join();
    }
  }
}

int check(int batch, int m, int n, int p, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  std::vector<float> a(size_t(batch) * m * n), b(size_t(batch) * n * p);
  std::vector<float> c(size_t(batch) * m * p, NAN);
  for (auto& v : a) v = dist(rng);
  for (auto& v : b) v = dist(rng);
  const unsigned tiles = ((m + 127) / 128) * ((p + 127) / 128);
  const bool vec = n % 4 == 0 && p % 4 == 0;  // as the host code chooses
  if (vec) launch<true>(tiles, batch, a.data(), b.data(), c.data(), m, n, p);
  else launch<false>(tiles, batch, a.data(), b.data(), c.data(), m, n, p);
  double worst = 0;
  for (int z = 0; z < batch; ++z)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < p; ++j) {
        double ref = 0;
        for (int k = 0; k < n; ++k)
          ref += double(a[(size_t(z) * m + i) * n + k]) * b[(size_t(z) * n + k) * p + j];
        const double got = c[(size_t(z) * m + i) * p + j];
        const double err = std::fabs(got - ref) / (1.0 + std::fabs(ref));
        worst = std::isnan(got) ? INFINITY : std::max(worst, err);
      }
  const bool ok = worst < 1e-4;
  std::printf("%s batch=%d m=%d n=%d p=%d vec=%d worst=%.2e\n", ok ? "ok  " : "FAIL", batch, m, n,
              p, int(vec), worst);
  return ok ? 0 : 1;
}

int main() {
  std::mt19937 rng(0);
  const int cases[][4] = {{1, 1, 1, 1},     {1, 3, 5, 7},     {1, 4, 4, 4},   {1, 128, 16, 128},
                          {1, 129, 17, 130}, {1, 130, 36, 127}, {1, 257, 64, 260}, {2, 33, 20, 66},
                          {1, 300, 0, 5},    {1, 1, 50, 1},   {1, 1100, 8, 4}, {3, 20, 48, 200}, {1, 1200, 4, 300}};
  int failures = 0;
  for (const auto& cs : cases) failures += check(cs[0], cs[1], cs[2], cs[3], rng);
  std::printf("%d failures\n", failures);
  return failures != 0;
}
