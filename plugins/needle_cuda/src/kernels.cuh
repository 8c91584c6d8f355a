// needle-cuda's kernels and the launchers that pick their configuration, free of Python so the
// CPU emulator (tests/emulate) runs this very code. Included by ndarray_cuda.cu. Errors are C++
// exceptions: std::invalid_argument (bad input, ValueError in Python), CudaError and
// CudaOutOfMemory (a failed CUDA call, with CUDA's message).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "matmul.cuh"

namespace needle_cuda {

using index_t = int64_t;
using Dims = std::vector<int64_t>;
constexpr int kMaxDims = 16;   // dimensions of a strided view after merging contiguous ones
constexpr int kThreads = 256;  // threads per block of the elementwise and reduction kernels
constexpr int kMaxInt = std::numeric_limits<int>::max();

// kernel<<<grid, block>>>(args...), or a run on CPU threads in the emulator.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
#ifdef NEEDLE_CUDA_EMULATE
  emulate::run(grid, block, [&] { kernel(args...); });
#else
  kernel<<<grid, block>>>(std::forward<Args>(args)...);
#endif
}

// ------------------------------------------------------------------------------------ errors

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct CudaOutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string describe(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

// Raise CUDA's message for a failed call; cudaGetLastError clears a non-sticky error so the
// next call starts clean (a sticky one, like an illegal address, keeps failing: the context is
// lost and every later call says so).
void check(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  const std::string msg = "CUDA error in " + what + ": " + describe(err);
  if (err == cudaErrorMemoryAllocation) throw CudaOutOfMemory(msg);
  throw CudaError(msg);
}

void check_launch(const char* kernel) {
  check(cudaGetLastError(), std::string("launching ") + kernel);
}

int sm_count() {
  static int count = 0;  // one device (the current one) per process
  if (count == 0) {
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev),
          "cudaDeviceGetAttribute(multiProcessorCount)");
  }
  return count;
}

// Blocks for a grid-stride loop over `items`: enough to fill the GPU, never zero.
unsigned grid_for(index_t items) {
  const index_t wanted = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<index_t>(1, std::min<index_t>(wanted, 16LL * sm_count())));
}

// Reusable device scratch for the partial results of split reductions (grown, never shrunk).
float* scratch(index_t count) {
  static float* buffer = nullptr;
  static index_t capacity = 0;
  if (count > capacity) {
    if (buffer != nullptr) check(cudaFree(buffer), "cudaFree (scratch)");
    buffer = nullptr;
    capacity = 0;
    check(cudaMalloc(reinterpret_cast<void**>(&buffer), count * sizeof(float)),
          "cudaMalloc (scratch)");
    capacity = count;
  }
  return buffer;
}

// ------------------------------------------------------------------------- strided views

// A strided view passed to kernels by value (dims merged where contiguous; ndim 0 = 1 element).
struct Strided {
  int ndim;
  index_t offset;
  index_t shape[kMaxDims];
  index_t strides[kMaxDims];
};

struct View {
  Strided s;
  index_t numel;
  bool small;  // every index fits comfortably in int32: use 32-bit index math
};

std::string dims_text(const Dims& d) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < d.size(); ++i) out << (i ? ", " : "") << d[i];
  out << (d.size() == 1 ? ",)" : ")");
  return out.str();
}

// Check that (shape, strides, offset) stays inside a buffer of buf_size elements and merge its
// dimensions.
View make_view(const char* fn, index_t buf_size, const Dims& shape, const Dims& strides,
               int64_t offset) {
  auto bad = [&](const std::string& why) {
    return std::invalid_argument(std::string(fn) + ": view (shape=" + dims_text(shape) +
                                 ", strides=" + dims_text(strides) +
                                 ", offset=" + std::to_string(offset) + ") " + why);
  };
  if (shape.size() != strides.size()) throw bad("has shape and strides of different lengths");
  __int128 numel = 1, lo = offset, hi = offset;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 0) throw bad("has a negative dimension");
    numel *= shape[d];
    if (numel > std::numeric_limits<int64_t>::max()) throw bad("is too large");
  }
  if (numel > 0) {
    for (size_t d = 0; d < shape.size(); ++d) {
      const __int128 reach = static_cast<__int128>(shape[d] - 1) * strides[d];
      (reach < 0 ? lo : hi) += reach;
    }
    if (lo < 0 || hi >= buf_size)
      throw bad("is outside a buffer of " + std::to_string(buf_size) + " elements");
  }
  View v{};
  v.numel = static_cast<index_t>(numel);
  v.s.offset = offset;
  v.s.ndim = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;  // size-1 dimensions never move the index
    const int last = v.s.ndim - 1;
    if (last >= 0 && v.s.strides[last] == strides[d] * shape[d]) {  // row-major neighbours
      v.s.shape[last] *= shape[d];
      v.s.strides[last] = strides[d];
      continue;
    }
    if (v.s.ndim == kMaxDims)
      throw bad("has more than " + std::to_string(kMaxDims) + " non-mergeable dimensions");
    v.s.shape[v.s.ndim] = shape[d];
    v.s.strides[v.s.ndim] = strides[d];
    ++v.s.ndim;
  }
  // Every partial index lies in [lo, hi], so int32 math is exact when these are small; the
  // margin keeps the grid-stride counter from overflowing.
  const index_t limit = 1LL << 30;
  v.small = v.numel <= limit && buf_size <= limit;
  return v;
}

template <typename I>
__device__ __forceinline__ I strided_index(const Strided& v, I linear) {
  I index = static_cast<I>(v.offset);
  for (int d = v.ndim - 1; d >= 0; --d) {
    const I dim = static_cast<I>(v.shape[d]);
    index += (linear % dim) * static_cast<I>(v.strides[d]);
    linear /= dim;
  }
  return index;
}

#define NEEDLE_GRID_STRIDE(I, i, n)                                          \
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<I>(blockDim.x) * gridDim.x)

template <typename I>
__global__ void compact_kernel(const float* a, float* out, Strided v, I n) {
  NEEDLE_GRID_STRIDE(I, i, n) { out[i] = a[strided_index(v, i)]; }
}

template <typename I>
__global__ void ewise_setitem_kernel(const float* a, float* out, Strided v, I n) {
  NEEDLE_GRID_STRIDE(I, i, n) { out[strided_index(v, i)] = a[i]; }
}

template <typename I>
__global__ void scalar_setitem_kernel(float val, float* out, Strided v, I n) {
  NEEDLE_GRID_STRIDE(I, i, n) { out[strided_index(v, i)] = val; }
}

// A transposed read, out (rows x cols, dense) = a[offset + r + c * col_stride]: through a 32x32
// shared tile, both the reads (along r) and the writes (along c) are coalesced.
constexpr int kTile = 32;
__global__ void transpose_kernel(const float* a, float* out, index_t rows, index_t cols,
                                 index_t offset, index_t col_stride) {
  __shared__ float tile[kTile][kTile + 1];  // +1: reading a column hits 32 different banks
  const index_t r0 = static_cast<index_t>(blockIdx.y) * kTile;
  const index_t c0 = static_cast<index_t>(blockIdx.x) * kTile;
  for (int j = threadIdx.y; j < kTile; j += blockDim.y) {  // tile[j][x] = element (r0+x, c0+j)
    const index_t r = r0 + threadIdx.x, c = c0 + j;
    if (r < rows && c < cols) tile[j][threadIdx.x] = a[offset + r + c * col_stride];
  }
  __syncthreads();
  for (int j = threadIdx.y; j < kTile; j += blockDim.y) {  // element (r0+j, c0+x)
    const index_t r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows && c < cols) out[r * cols + c] = tile[threadIdx.x][j];
  }
}

// out[i] = a[view(i)] for the whole view (out is dense, view.numel elements).
void launch_compact(const float* a, float* out, const View& v) {
  if (v.numel == 0) return;
  const index_t row_tiles = (v.s.shape[0] + kTile - 1) / kTile;
  if (v.s.ndim == 2 && v.s.strides[0] == 1 && row_tiles <= 65535) {  // a transpose
    const dim3 grid(static_cast<unsigned>((v.s.shape[1] + kTile - 1) / kTile),
                    static_cast<unsigned>(row_tiles));
    launch(transpose_kernel, grid, dim3(kTile, 8), a, out, v.s.shape[0], v.s.shape[1], v.s.offset,
           v.s.strides[1]);
    check_launch("transpose_kernel");
    return;
  }
  if (v.small) {
    launch(compact_kernel<int>, grid_for(v.numel), kThreads, a, out, v.s,
           static_cast<int>(v.numel));
  } else {
    launch(compact_kernel<index_t>, grid_for(v.numel), kThreads, a, out, v.s, v.numel);
  }
  check_launch("compact_kernel");
}

// out[view(i)] = a[i] for the whole view.
void launch_ewise_setitem(const float* a, float* out, const View& v) {
  if (v.numel == 0) return;
  if (v.small) {
    launch(ewise_setitem_kernel<int>, grid_for(v.numel), kThreads, a, out, v.s,
           static_cast<int>(v.numel));
  } else {
    launch(ewise_setitem_kernel<index_t>, grid_for(v.numel), kThreads, a, out, v.s, v.numel);
  }
  check_launch("ewise_setitem_kernel");
}

// out[view(i)] = val for the whole view.
void launch_scalar_setitem(float val, float* out, const View& v) {
  if (v.numel == 0) return;
  if (v.small) {
    launch(scalar_setitem_kernel<int>, grid_for(v.numel), kThreads, val, out, v.s,
           static_cast<int>(v.numel));
  } else {
    launch(scalar_setitem_kernel<index_t>, grid_for(v.numel), kThreads, val, out, v.s, v.numel);
  }
  check_launch("scalar_setitem_kernel");
}

// ------------------------------------------------------------------------ elementwise ops

struct Add {
  __device__ float operator()(float x, float y) const { return x + y; }
};
struct Mul {
  __device__ float operator()(float x, float y) const { return x * y; }
};
struct Div {
  __device__ float operator()(float x, float y) const { return x / y; }
};
struct Pow {
  __device__ float operator()(float x, float y) const { return powf(x, y); }
};
// numpy's power by a scalar exponent takes sqrt for 0.5 and x * x for 2 (so -0.0 ** 0.5 is -0.0
// and -inf ** 0.5 is NaN, where powf gives +0.0 and +inf); an array exponent takes powf.
struct ScalarPow {
  __device__ float operator()(float x, float y) const {
    return y == 0.5f ? sqrtf(x) : y == 2.f ? x * x : powf(x, y);
  }
};
// numpy's maximum: NaN in either operand gives NaN.
struct Max {
  __device__ float operator()(float x, float y) const { return (x > y || x != x) ? x : y; }
};
struct Eq {
  __device__ float operator()(float x, float y) const { return x == y ? 1.f : 0.f; }
};
struct Ge {
  __device__ float operator()(float x, float y) const { return x >= y ? 1.f : 0.f; }
};
struct Log {
  __device__ float operator()(float x) const { return logf(x); }
};
struct Exp {
  __device__ float operator()(float x) const { return expf(x); }
};
struct Tanh {
  __device__ float operator()(float x) const { return tanhf(x); }
};
template <typename Op>
struct WithScalar {  // x -> op(x, val)
  Op op;
  float val;
  __device__ float operator()(float x) const { return op(x, val); }
};
struct Constant {
  float val;
  __device__ float operator()(float) const { return val; }
};

// Buffers from cudaMalloc are 256-byte aligned, so the bulk goes through float4; out may be a.
template <typename Op>
__global__ void ewise_kernel(const float* a, const float* b, float* out, index_t n, Op op) {
  const index_t n4 = n / 4, step = static_cast<index_t>(blockDim.x) * gridDim.x;
  const index_t first = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const float4* a4 = reinterpret_cast<const float4*>(a);
  const float4* b4 = reinterpret_cast<const float4*>(b);
  float4* out4 = reinterpret_cast<float4*>(out);
  for (index_t i = first; i < n4; i += step) {
    const float4 x = a4[i], y = b4[i];
    out4[i] = make_float4(op(x.x, y.x), op(x.y, y.y), op(x.z, y.z), op(x.w, y.w));
  }
  for (index_t i = 4 * n4 + first; i < n; i += step) out[i] = op(a[i], b[i]);
}

template <typename Op>
__global__ void unary_kernel(const float* a, float* out, index_t n, Op op) {
  const index_t n4 = n / 4, step = static_cast<index_t>(blockDim.x) * gridDim.x;
  const index_t first = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const float4* a4 = reinterpret_cast<const float4*>(a);
  float4* out4 = reinterpret_cast<float4*>(out);
  for (index_t i = first; i < n4; i += step) {
    const float4 x = a4[i];
    out4[i] = make_float4(op(x.x), op(x.y), op(x.z), op(x.w));
  }
  for (index_t i = 4 * n4 + first; i < n; i += step) out[i] = op(a[i]);
}

template <typename Op>
void launch_ewise(const float* a, const float* b, float* out, index_t n, const char* name) {
  if (n == 0) return;
  launch(ewise_kernel<Op>, grid_for((n + 3) / 4), kThreads, a, b, out, n, Op{});
  check_launch(name);
}

template <typename Op>
void launch_unary(const float* a, float* out, index_t n, Op op, const char* name) {
  if (n == 0) return;
  launch(unary_kernel<Op>, grid_for((n + 3) / 4), kThreads, a, out, n, op);
  check_launch(name);
}

// ---------------------------------------------------------------------------- reductions

struct SumOp {
  static __device__ float identity() { return 0.f; }
  __device__ float operator()(float x, float y) const { return x + y; }
};
struct MaxOp {  // NaN propagates, as in numpy
  static __device__ float identity() { return -INFINITY; }
  __device__ float operator()(float x, float y) const { return (x > y || x != x) ? x : y; }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
  for (int delta = 16; delta > 0; delta >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, delta));
  return v;  // complete in lane 0
}

// Whole-block reduction (blockDim.x == kThreads); the result is complete in thread 0.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, Op op) {
  __shared__ float partial[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce(v, op);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? partial[lane] : Op::identity();
  if (warp == 0) v = warp_reduce(v, op);
  __syncthreads();  // partial may be reused right after
  return v;
}

// Short rows (reduce_size <= 16): one thread per row.
template <typename Op>
__global__ void reduce_thread_kernel(const float* in, float* out, index_t rows, index_t size) {
  Op op;
  NEEDLE_GRID_STRIDE(index_t, row, rows) {
    const float* x = in + row * size;
    float acc = x[0];
    for (index_t j = 1; j < size; ++j) acc = op(acc, x[j]);
    out[row] = acc;
  }
}

// Medium rows: one warp per row; kVec when size % 4 == 0 (every row starts 16-byte aligned).
template <typename Op, bool kVec>
__global__ void reduce_warp_kernel(const float* in, float* out, index_t rows, index_t size) {
  Op op;
  const int lane = threadIdx.x & 31;
  const index_t warps = static_cast<index_t>(gridDim.x) * (blockDim.x / 32);
  for (index_t row = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += warps) {
    float acc = Op::identity();
    if (kVec) {
      const float4* x = reinterpret_cast<const float4*>(in + row * size);
      for (index_t j = lane; j < size / 4; j += 32) {
        const float4 v = x[j];
        acc = op(op(acc, v.x), op(v.y, op(v.z, v.w)));
      }
    } else {
      const float* x = in + row * size;
      for (index_t j = lane; j < size; j += 32) acc = op(acc, x[j]);
    }
    acc = warp_reduce(acc, op);
    if (lane == 0) out[row] = acc;
  }
}

// Long rows: block `b` reduces chunk (b % chunks) of row (b / chunks) into out[b]; kVec when
// size and chunk are multiples of 4.
template <typename Op, bool kVec>
__global__ void reduce_block_kernel(const float* in, float* out, index_t rows, index_t size,
                                    index_t chunk, index_t chunks) {
  Op op;
  for (index_t b = blockIdx.x; b < rows * chunks; b += gridDim.x) {  // uniform per block
    const index_t row = b / chunks, begin = (b % chunks) * chunk;
    const index_t end = min(size, begin + chunk);
    const float* x = in + row * size;
    float acc = Op::identity();
    if (kVec) {
      const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 4
      for (index_t j = begin / 4 + threadIdx.x; j < end / 4; j += blockDim.x) {
        const float4 v = x4[j];
        acc = op(op(acc, v.x), op(v.y, op(v.z, v.w)));
      }
    } else {
#pragma unroll 4
      for (index_t j = begin + threadIdx.x; j < end; j += blockDim.x) acc = op(acc, x[j]);
    }
    acc = block_reduce(acc, op);
    if (threadIdx.x == 0) out[b] = acc;
  }
}

// out[r] = op-reduction of in[r*size : (r+1)*size] for r < rows.
template <typename Op>
void reduce_rows(const float* in, float* out, index_t rows, index_t size) {
  if (size == 1) {
    if (in != out)
      check(cudaMemcpy(out, in, rows * sizeof(float), cudaMemcpyDeviceToDevice),
            "cudaMemcpy (reduce)");
    return;
  }
  const bool vec = size % 4 == 0;
  if (size <= 16) {
    launch(reduce_thread_kernel<Op>, grid_for(rows), kThreads, in, out, rows, size);
  } else if (size <= 2048) {
    const unsigned grid = grid_for(rows * 32);
    if (vec)
      launch(reduce_warp_kernel<Op, true>, grid, kThreads, in, out, rows, size);
    else
      launch(reduce_warp_kernel<Op, false>, grid, kThreads, in, out, rows, size);
  } else {
    // Few rows: split each into chunks of >= 4096 elements so about 8 blocks run per SM, then
    // reduce the chunk results (rows x chunks) in a second pass.
    const index_t target = 8LL * sm_count();
    index_t chunks = 1;
    if (rows < target)  // at most 2048 chunks, so the second pass never splits again
      chunks =
          std::max<index_t>(1, std::min({(target + rows - 1) / rows, size / 4096, index_t{2048}}));
    const index_t chunk = ((size + chunks - 1) / chunks + 3) / 4 * 4;
    chunks = (size + chunk - 1) / chunk;
    float* dest = chunks == 1 ? out : scratch(rows * chunks);
    const unsigned grid = static_cast<unsigned>(std::min<index_t>(rows * chunks, kMaxInt));
    if (vec)
      launch(reduce_block_kernel<Op, true>, grid, kThreads, in, dest, rows, size, chunk, chunks);
    else
      launch(reduce_block_kernel<Op, false>, grid, kThreads, in, dest, rows, size, chunk, chunks);
    check_launch("reduce_block_kernel");
    if (chunks > 1) reduce_rows<Op>(dest, out, rows, chunks);
    return;
  }
  check_launch("reduce kernel");
}

// ------------------------------------------------------------------------------- matmul

// c = a @ b for `batch` stacked compact (m, n) @ (n, p) products; sizes already checked.
void launch_matmul(const float* a, const float* b, float* c, index_t batch, int m, int n, int p) {
  if (batch == 0 || m == 0 || p == 0) return;
  const index_t tiles =
      static_cast<index_t>((m + mm::BM - 1) / mm::BM) * ((p + mm::BN - 1) / mm::BN);
  if (tiles > kMaxInt) throw std::invalid_argument("matmul: matrices too large");
  const bool vec = n % 4 == 0 && p % 4 == 0;                // 16-byte rows: float4 loads and stores
  for (index_t first = 0; first < batch; first += 65535) {  // gridDim.z limit
    const unsigned count = static_cast<unsigned>(std::min<index_t>(65535, batch - first));
    const dim3 grid(static_cast<unsigned>(tiles), 1, count);
    const float* pa = a + first * m * n;
    const float* pb = b + first * n * p;
    float* pc = c + first * m * p;
    if (vec)
      launch(mm::matmul_kernel<true>, grid, mm::THREADS, pa, pb, pc, m, n, p);
    else
      launch(mm::matmul_kernel<false>, grid, mm::THREADS, pa, pb, pc, m, n, p);
    check_launch("matmul_kernel");
  }
}

}  // namespace needle_cuda
