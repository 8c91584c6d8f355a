// A CUDA shim for running needle-cuda's kernels on the CPU (see kernels_emulator.cpp): the
// qualifiers, the built-in variables, __syncthreads, __shfl_down_sync and the few runtime calls
// the sources use, over host memory. One std::thread per CUDA thread, blocks one after another.
// Include it before the sources (g++ -include cuda_shim.h); it defines NEEDLE_CUDA_EMULATE.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define NEEDLE_CUDA_EMULATE
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // blocks run one at a time: a static is the running block's memory
#define __align__(n) __attribute__((aligned(n)))

struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
thread_local uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
using std::min;

struct Warp {  // a partial last warp must not shuffle (nor does any kernel here)
  explicit Warp(unsigned lanes) : barrier(lanes) {}
  std::barrier<> barrier;
  alignas(8) unsigned char lanes[32][8];  // one value of up to 8 bytes per lane
};
std::barrier<>* block_barrier = nullptr;
thread_local Warp* my_warp = nullptr;
thread_local int my_lane = 0;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
template <typename T>
T __shfl_down_sync(unsigned, T v, int delta) {
  static_assert(sizeof(T) <= 8, "shuffles move up to 8 bytes");
  std::memcpy(my_warp->lanes[my_lane], &v, sizeof(T));
  my_warp->barrier.arrive_and_wait();
  T got = v;
  if (my_lane + delta < 32) std::memcpy(&got, my_warp->lanes[my_lane + delta], sizeof(T));
  my_warp->barrier.arrive_and_wait();
  return got;
}

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorUnsupportedPtxVersion = 222,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3
};
#define CUDART_VERSION 13000
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaError";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorMemoryAllocation ? "out of memory" : "emulated error";
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 2;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
struct cudaDeviceProp {
  char name[256];
  int major, minor;
};
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof p->name, "CPU emulation");
  p->major = 9;
  p->minor = 0;
  return cudaSuccess;
}
struct cudaFuncAttributes {};
template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes*, F) {
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  std::memmove(d, s, n);
  return cudaSuccess;
}
// Streams and events: every emulated kernel has finished when its launch returns, so ordering
// work between streams needs nothing.
using cudaStream_t = struct CUstream_st*;
using cudaEvent_t = struct CUevent_st*;
#define cudaStreamLegacy (reinterpret_cast<cudaStream_t>(0x1))
#define cudaStreamPerThread (reinterpret_cast<cudaStream_t>(0x2))
constexpr unsigned cudaEventDisableTiming = 2;
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }

namespace emulate {
void run(dim3 grid, dim3 block, const std::function<void()>& kernel) {
  gridDim = grid;
  blockDim = block;
  const unsigned threads = block.x * block.y * block.z;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        std::barrier<> barrier(threads);
        block_barrier = &barrier;
        std::vector<std::unique_ptr<Warp>> warps;
        for (unsigned w = 0; w * 32 < threads; ++w)
          warps.push_back(std::make_unique<Warp>(std::min(32u, threads - w * 32)));
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t)
          pool.emplace_back([&, t] {
            threadIdx.x = t % block.x;
            threadIdx.y = t / block.x % block.y;
            threadIdx.z = t / (block.x * block.y);
            blockIdx.x = x;
            blockIdx.y = y;
            blockIdx.z = z;
            my_warp = warps[t / 32].get();
            my_lane = t % 32;
            kernel();
          });
        for (auto& th : pool) th.join();
      }
}
}  // namespace emulate
