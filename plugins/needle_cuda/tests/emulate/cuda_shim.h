// A CUDA shim for running needle-cuda's kernels on the CPU (see kernels_emulator.cpp): the
// qualifiers, the built-in variables, __syncthreads, __shfl_down_sync and the few runtime calls
// the sources use, over host memory. Blocks run one after another; each CUDA thread of a block
// is a fiber (ucontext) of the calling thread, and a barrier switches to the next fiber, so
// threads interleave only at __syncthreads and shuffles, as the kernels promise they may. The
// fibers run in turn, forward then backward between barriers, so a missing barrier shows as a
// wrong result in either direction (a read before another thread's write, or a write before
// another thread's read), and a barrier that some threads never reach aborts with a message.
// Include it before the sources (g++ -include cuda_shim.h); it defines NEEDLE_CUDA_EMULATE.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
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

namespace emulate {

// One CUDA thread of the running block.
struct Fiber {
  ucontext_t context;
  unsigned index = 0;  // linear index of the thread in its block
  int waiting = -1;    // the barrier it waits at: 0 the block's, 1 + w warp w's; -1 none
  bool done = false;
};

struct Block {
  static constexpr size_t kStack = 128 << 10;  // bytes of stack per fiber
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<int> arrived;  // per barrier
  ucontext_t scheduler;
  Fiber* current = nullptr;
  const std::function<void()>* kernel = nullptr;
  unsigned char lanes[32][32][8];  // shuffle exchange: per warp, per lane, up to 8 bytes
};
inline thread_local Block* running = nullptr;

// The running fiber arrives at `barrier` and yields until every live thread it concerns has.
inline void wait_at(int barrier) {
  Block& b = *running;
  Fiber& f = *b.current;
  f.waiting = barrier;
  ++b.arrived[barrier];
  swapcontext(&f.context, &b.scheduler);
}

}  // namespace emulate

inline void __syncthreads() { emulate::wait_at(0); }
template <typename T>
T __shfl_down_sync(unsigned, T v, int delta) {
  static_assert(sizeof(T) <= 8, "shuffles move up to 8 bytes");
  emulate::Block& b = *emulate::running;
  const unsigned warp = b.current->index / 32, lane = b.current->index % 32;
  std::memcpy(b.lanes[warp][lane], &v, sizeof(T));
  emulate::wait_at(1 + static_cast<int>(warp));
  T got = v;
  if (lane + delta < 32) std::memcpy(&got, b.lanes[warp][lane + delta], sizeof(T));
  emulate::wait_at(1 + static_cast<int>(warp));  // before any lane overwrites its value
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

inline void fiber_main() {
  (*running->kernel)();
  running->current->done = true;
}  // returning resumes the scheduler (uc_link)

inline void run_block(Block& b, const dim3& block, const uint3& where) {
  const unsigned threads = block.x * block.y * block.z;
  while (b.stacks.size() < threads) b.stacks.push_back(std::make_unique<char[]>(Block::kStack));
  b.fibers.assign(threads, Fiber{});
  b.arrived.assign(1 + (threads + 31) / 32, 0);
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = b.fibers[t];
    f.index = t;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = b.stacks[t].get();
    f.context.uc_stack.ss_size = Block::kStack;
    f.context.uc_link = &b.scheduler;
    makecontext(&f.context, fiber_main, 0);
  }
  blockIdx = where;
  for (bool forward = true;; forward = !forward) {
    bool ran = false;
    for (unsigned k = 0; k < threads; ++k) {
      Fiber& f = b.fibers[forward ? k : threads - 1 - k];
      if (f.done || f.waiting >= 0) continue;
      threadIdx.x = f.index % block.x;
      threadIdx.y = f.index / block.x % block.y;
      threadIdx.z = f.index / (block.x * block.y);
      b.current = &f;
      swapcontext(&b.scheduler, &f.context);
      ran = true;
    }
    // Release each barrier that every live thread of its block or warp has reached.
    std::vector<int> live(b.arrived.size(), 0);
    for (const Fiber& f : b.fibers) {
      if (f.done) continue;
      ++live[0];
      ++live[1 + f.index / 32];
    }
    if (live[0] == 0) return;
    bool released = false;
    for (size_t i = 0; i < b.arrived.size(); ++i) {
      if (b.arrived[i] == 0 || b.arrived[i] != live[i]) continue;
      for (Fiber& f : b.fibers)
        if (f.waiting == static_cast<int>(i)) f.waiting = -1;
      b.arrived[i] = 0;
      released = true;
    }
    if (!ran && !released) {
      std::fprintf(stderr,
                   "emulated kernel deadlock: threads wait at a barrier others never reach\n");
      std::abort();
    }
  }
}

inline void run(dim3 grid, dim3 block, const std::function<void()>& kernel) {
  static thread_local Block b;
  Block* outer = running;
  running = &b;
  b.kernel = &kernel;
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        uint3 where;
        where.x = x;
        where.y = y;
        where.z = z;
        run_block(b, block, where);
      }
  running = outer;
}

}  // namespace emulate
