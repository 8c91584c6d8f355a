// needle-cuda's kernels and the launchers that pick their configuration, for every dtype, free of
// Python so the CPU emulator (tests/emulate) runs this very code. Included by ndarray_cuda.cu.
// Errors are C++ exceptions: std::invalid_argument (bad input, ValueError in Python), CudaError
// and CudaOutOfMemory (a failed CUDA call, with CUDA's message).
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

#include "dtypes.cuh"
#include "matmul.cuh"
#include "ops.cuh"

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

inline std::string describe(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

// Raise CUDA's message for a failed call; cudaGetLastError clears a non-sticky error so the
// next call starts clean (a sticky one, like an illegal address, keeps failing: the context is
// lost and every later call says so).
inline void check(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  const std::string msg = "CUDA error in " + what + ": " + describe(err);
  if (err == cudaErrorMemoryAllocation) throw CudaOutOfMemory(msg);
  throw CudaError(msg);
}

inline void check_launch(const char* kernel) {
  check(cudaGetLastError(), std::string("launching ") + kernel);
}

inline int sm_count() {
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
inline unsigned grid_for(index_t items) {
  const index_t wanted = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<index_t>(1, std::min<index_t>(wanted, 16LL * sm_count())));
}

// Reusable device scratch for the partial results of split reductions (grown, never shrunk).
inline void* scratch(size_t bytes) {
  static void* buffer = nullptr;
  static size_t capacity = 0;
  if (bytes > capacity) {
    if (buffer != nullptr) check(cudaFree(buffer), "cudaFree (scratch)");
    buffer = nullptr;
    capacity = 0;
    check(cudaMalloc(&buffer, bytes), "cudaMalloc (scratch)");
    capacity = bytes;
  }
  return buffer;
}

// True when p is aligned to Bytes (buffers from cudaMalloc always are; imported ones may not be).
template <size_t Bytes>
bool aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % Bytes == 0;
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

inline std::string dims_text(const Dims& d) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < d.size(); ++i) out << (i ? ", " : "") << d[i];
  out << (d.size() == 1 ? ",)" : ")");
  return out.str();
}

// The one view-bounds check: (shape, strides, offset) must stay inside a buffer of buf_size
// elements (else std::invalid_argument naming the view); merges contiguous dimensions.
inline View make_view(const char* fn, index_t buf_size, const Dims& shape, const Dims& strides,
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

// The strided kernels copy elements as unsigned integers of their width (U): one kernel per
// width serves every dtype of that width.
template <typename I, typename U>
__global__ void compact_kernel(const U* a, U* out, Strided v, I n) {
  NEEDLE_GRID_STRIDE(I, i, n) { out[i] = a[strided_index(v, i)]; }
}

template <typename I, typename U>
__global__ void ewise_setitem_kernel(const U* a, U* out, Strided v, I n) {
  NEEDLE_GRID_STRIDE(I, i, n) { out[strided_index(v, i)] = a[i]; }
}

template <typename I, typename U>
__global__ void scalar_setitem_kernel(U val, U* out, Strided v, I n) {
  NEEDLE_GRID_STRIDE(I, i, n) { out[strided_index(v, i)] = val; }
}

// A transposed read, out (rows x cols, dense) = a[offset + r + c * col_stride]: through a 32x32
// shared tile, both the reads (along r) and the writes (along c) are coalesced.
constexpr int kTile = 32;
template <typename U>
__global__ void transpose_kernel(const U* a, U* out, index_t rows, index_t cols, index_t offset,
                                 index_t col_stride) {
  __shared__ U tile[kTile][kTile + 1];  // +1: reading a column hits 32 different banks
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
template <typename U>
void launch_compact(const U* a, U* out, const View& v) {
  if (v.numel == 0) return;
  const index_t row_tiles = (v.s.shape[0] + kTile - 1) / kTile;
  if (v.s.ndim == 2 && v.s.strides[0] == 1 && row_tiles <= 65535) {  // a transpose
    const dim3 grid(static_cast<unsigned>((v.s.shape[1] + kTile - 1) / kTile),
                    static_cast<unsigned>(row_tiles));
    launch(transpose_kernel<U>, grid, dim3(kTile, 8), a, out, v.s.shape[0], v.s.shape[1],
           v.s.offset, v.s.strides[1]);
    check_launch("transpose_kernel");
    return;
  }
  if (v.small) {
    launch(compact_kernel<int, U>, grid_for(v.numel), kThreads, a, out, v.s,
           static_cast<int>(v.numel));
  } else {
    launch(compact_kernel<index_t, U>, grid_for(v.numel), kThreads, a, out, v.s, v.numel);
  }
  check_launch("compact_kernel");
}

// out[view(i)] = a[i] for the whole view.
template <typename U>
void launch_ewise_setitem(const U* a, U* out, const View& v) {
  if (v.numel == 0) return;
  if (v.small) {
    launch(ewise_setitem_kernel<int, U>, grid_for(v.numel), kThreads, a, out, v.s,
           static_cast<int>(v.numel));
  } else {
    launch(ewise_setitem_kernel<index_t, U>, grid_for(v.numel), kThreads, a, out, v.s, v.numel);
  }
  check_launch("ewise_setitem_kernel");
}

// out[view(i)] = val for the whole view.
template <typename U>
void launch_scalar_setitem(U val, U* out, const View& v) {
  if (v.numel == 0) return;
  if (v.small) {
    launch(scalar_setitem_kernel<int, U>, grid_for(v.numel), kThreads, val, out, v.s,
           static_cast<int>(v.numel));
  } else {
    launch(scalar_setitem_kernel<index_t, U>, grid_for(v.numel), kThreads, val, out, v.s, v.numel);
  }
  check_launch("scalar_setitem_kernel");
}

// ------------------------------------------------------------------------ elementwise ops

// Elements per aligned 16-byte step when reading In and writing Out.
template <typename In, typename Out>
constexpr int pack_of() {
  return static_cast<int>(16 / (sizeof(In) > sizeof(Out) ? sizeof(In) : sizeof(Out)));
}

// out[i] = op(a[i], b[i]), K elements per load and store (K = 1 for unaligned buffers); out may
// be a or b.
template <int K, typename In, typename Out, typename Op>
__global__ void map2_kernel(const In* a, const In* b, Out* out, index_t n, Op op) {
  const index_t packs = n / K, step = static_cast<index_t>(blockDim.x) * gridDim.x;
  const index_t first = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const auto* ap = reinterpret_cast<const Pack<In, K>*>(a);
  const auto* bp = reinterpret_cast<const Pack<In, K>*>(b);
  auto* op_out = reinterpret_cast<Pack<Out, K>*>(out);
  for (index_t i = first; i < packs; i += step) {
    const Pack<In, K> x = ap[i], y = bp[i];
    Pack<Out, K> z;
#pragma unroll
    for (int k = 0; k < K; ++k) z.v[k] = op(x.v[k], y.v[k]);
    op_out[i] = z;
  }
  for (index_t i = K * packs + first; i < n; i += step) out[i] = op(a[i], b[i]);
}

// out[i] = op(a[i]); out may be a.
template <int K, typename In, typename Out, typename Op>
__global__ void map1_kernel(const In* a, Out* out, index_t n, Op op) {
  const index_t packs = n / K, step = static_cast<index_t>(blockDim.x) * gridDim.x;
  const index_t first = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const auto* ap = reinterpret_cast<const Pack<In, K>*>(a);
  auto* op_out = reinterpret_cast<Pack<Out, K>*>(out);
  for (index_t i = first; i < packs; i += step) {
    const Pack<In, K> x = ap[i];
    Pack<Out, K> z;
#pragma unroll
    for (int k = 0; k < K; ++k) z.v[k] = op(x.v[k]);
    op_out[i] = z;
  }
  for (index_t i = K * packs + first; i < n; i += step) out[i] = op(a[i]);
}

template <int K, typename U>
__global__ void fill_kernel(U* out, U val, index_t n) {
  const index_t packs = n / K, step = static_cast<index_t>(blockDim.x) * gridDim.x;
  const index_t first = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  Pack<U, K> p;
#pragma unroll
  for (int k = 0; k < K; ++k) p.v[k] = val;
  auto* op_out = reinterpret_cast<Pack<U, K>*>(out);
  for (index_t i = first; i < packs; i += step) op_out[i] = p;
  for (index_t i = K * packs + first; i < n; i += step) out[i] = val;
}

template <typename In, typename Out, typename Op>
void launch_map2(const In* a, const In* b, Out* out, index_t n, Op op, const char* name) {
  if (n == 0) return;
  constexpr int K = pack_of<In, Out>();
  if (aligned<K * sizeof(In)>(a) && aligned<K * sizeof(In)>(b) && aligned<K * sizeof(Out)>(out))
    launch(map2_kernel<K, In, Out, Op>, grid_for((n + K - 1) / K), kThreads, a, b, out, n, op);
  else
    launch(map2_kernel<1, In, Out, Op>, grid_for(n), kThreads, a, b, out, n, op);
  check_launch(name);
}

template <typename In, typename Out, typename Op>
void launch_map1(const In* a, Out* out, index_t n, Op op, const char* name) {
  if (n == 0) return;
  constexpr int K = pack_of<In, Out>();
  if (aligned<K * sizeof(In)>(a) && aligned<K * sizeof(Out)>(out))
    launch(map1_kernel<K, In, Out, Op>, grid_for((n + K - 1) / K), kThreads, a, out, n, op);
  else
    launch(map1_kernel<1, In, Out, Op>, grid_for(n), kThreads, a, out, n, op);
  check_launch(name);
}

template <typename U>
void launch_fill(U* out, U val, index_t n) {
  if (n == 0) return;
  constexpr int K = pack_of<U, U>();
  if (aligned<K * sizeof(U)>(out))
    launch(fill_kernel<K, U>, grid_for((n + K - 1) / K), kThreads, out, val, n);
  else
    launch(fill_kernel<1, U>, grid_for(n), kThreads, out, val, n);
  check_launch("fill_kernel");
}

// ---------------------------------------------------------------------------- reductions

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int delta = 16; delta > 0; delta >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, delta));
  return v;  // complete in lane 0
}

// Whole-block reduction (blockDim.x == kThreads); the result is complete in thread 0.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op) {
  __shared__ T partial[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce(v, op);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? partial[lane] : Op::template identity<T>();
  if (warp == 0) v = warp_reduce(v, op);
  __syncthreads();  // partial may be reused right after
  return v;
}

// Short rows (reduce_size <= 16): one thread per row.
template <typename T, typename Op>
__global__ void reduce_thread_kernel(const T* in, T* out, index_t rows, index_t size) {
  Op op;
  NEEDLE_GRID_STRIDE(index_t, row, rows) {
    const T* x = in + row * size;
    T acc = x[0];
    for (index_t j = 1; j < size; ++j) acc = op(acc, x[j]);
    out[row] = acc;
  }
}

// K elements of a row folded into acc (the pairing keeps float32 sums as before).
template <typename T, int K, typename Op>
__device__ __forceinline__ T fold(T acc, const Pack<T, K>& v, Op op) {
  if constexpr (K == 4) {
    return op(op(acc, v.v[0]), op(v.v[1], op(v.v[2], v.v[3])));
  } else if constexpr (K == 2) {
    return op(acc, op(v.v[0], v.v[1]));
  } else {
    return op(acc, v.v[0]);
  }
}

// Medium rows: one warp per row; K elements per load (every row starts aligned when K > 1).
template <typename T, typename Op, int K>
__global__ void reduce_warp_kernel(const T* in, T* out, index_t rows, index_t size) {
  Op op;
  const int lane = threadIdx.x & 31;
  const index_t warps = static_cast<index_t>(gridDim.x) * (blockDim.x / 32);
  for (index_t row = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += warps) {
    T acc = Op::template identity<T>();
    const auto* x = reinterpret_cast<const Pack<T, K>*>(in + row * size);
    for (index_t j = lane; j < size / K; j += 32) acc = fold(acc, x[j], op);
    acc = warp_reduce(acc, op);
    if (lane == 0) out[row] = acc;
  }
}

// Long rows: block `b` reduces chunk (b % chunks) of row (b / chunks) into out[b]; K elements
// per load (size and chunk are multiples of K when K > 1).
template <typename T, typename Op, int K>
__global__ void reduce_block_kernel(const T* in, T* out, index_t rows, index_t size, index_t chunk,
                                    index_t chunks) {
  Op op;
  for (index_t b = blockIdx.x; b < rows * chunks; b += gridDim.x) {  // uniform per block
    const index_t row = b / chunks, begin = (b % chunks) * chunk;
    const index_t end = min(size, begin + chunk);
    const auto* x = reinterpret_cast<const Pack<T, K>*>(in + row * size);
    T acc = Op::template identity<T>();
#pragma unroll 4
    for (index_t j = begin / K + threadIdx.x; j < end / K; j += blockDim.x)
      acc = fold(acc, x[j], op);
    acc = block_reduce(acc, op);
    if (threadIdx.x == 0) out[b] = acc;
  }
}

// out[r] = op-reduction of in[r*size : (r+1)*size] for r < rows.
template <typename T, typename Op>
void reduce_rows(const T* in, T* out, index_t rows, index_t size) {
  if (size == 1) {
    if (in != out)
      check(cudaMemcpy(out, in, rows * sizeof(T), cudaMemcpyDeviceToDevice), "cudaMemcpy (reduce)");
    return;
  }
  constexpr int K = static_cast<int>(16 / sizeof(T));
  const bool vec = size % K == 0 && aligned<16>(in);
  if (size <= 16) {
    launch(reduce_thread_kernel<T, Op>, grid_for(rows), kThreads, in, out, rows, size);
  } else if (size <= 2048) {
    const unsigned grid = grid_for(rows * 32);
    if (vec)
      launch(reduce_warp_kernel<T, Op, K>, grid, kThreads, in, out, rows, size);
    else
      launch(reduce_warp_kernel<T, Op, 1>, grid, kThreads, in, out, rows, size);
  } else {
    // Few rows: split each into chunks of >= 4096 elements so about 8 blocks run per SM, then
    // reduce the chunk results (rows x chunks) in a second pass.
    const index_t target = 8LL * sm_count();
    index_t chunks = 1;
    if (rows < target)  // at most 2048 chunks, so the second pass never splits again
      chunks =
          std::max<index_t>(1, std::min({(target + rows - 1) / rows, size / 4096, index_t{2048}}));
    const index_t chunk = ((size + chunks - 1) / chunks + 3) / 4 * 4;  // a multiple of K
    chunks = (size + chunk - 1) / chunk;
    T* dest = chunks == 1 ? out : static_cast<T*>(scratch(rows * chunks * sizeof(T)));
    const unsigned grid = static_cast<unsigned>(std::min<index_t>(rows * chunks, kMaxInt));
    if (vec)
      launch(reduce_block_kernel<T, Op, K>, grid, kThreads, in, dest, rows, size, chunk, chunks);
    else
      launch(reduce_block_kernel<T, Op, 1>, grid, kThreads, in, dest, rows, size, chunk, chunks);
    check_launch("reduce_block_kernel");
    if (chunks > 1) reduce_rows<T, Op>(dest, out, rows, chunks);
    return;
  }
  check_launch("reduce kernel");
}

// ------------------------------------------------------------------------------- matmul

// c = a @ b for `batch` stacked compact (m, n) @ (n, p) products; sizes already checked. float32
// runs the 128x128-tile kernel of matmul.cuh, the other dtypes its simpler 64x64-tile kernel.
template <typename T>
void launch_matmul(const T* a, const T* b, T* c, index_t batch, int m, int n, int p) {
  if (batch == 0 || m == 0 || p == 0) return;
  constexpr bool fast = std::is_same_v<T, float>;
  const int bm = fast ? mm::BM : mm::SM, bn = fast ? mm::BN : mm::SM;
  const index_t tiles = static_cast<index_t>((m + bm - 1) / bm) * ((p + bn - 1) / bn);
  if (tiles > kMaxInt) throw std::invalid_argument("matmul: matrices too large");
  // 16-byte rows and buffers: float4 loads and stores
  const bool vec = n % 4 == 0 && p % 4 == 0 && aligned<16>(a) && aligned<16>(b) && aligned<16>(c);
  for (index_t first = 0; first < batch; first += 65535) {  // gridDim.z limit
    const unsigned count = static_cast<unsigned>(std::min<index_t>(65535, batch - first));
    const dim3 grid(static_cast<unsigned>(tiles), 1, count);
    const T* pa = a + first * m * n;
    const T* pb = b + first * n * p;
    T* pc = c + first * m * p;
    if constexpr (fast) {
      if (vec)
        launch(mm::matmul_kernel<true>, grid, mm::THREADS, pa, pb, pc, m, n, p);
      else
        launch(mm::matmul_kernel<false>, grid, mm::THREADS, pa, pb, pc, m, n, p);
    } else {
      launch(mm::matmul_simple_kernel<T>, grid, mm::THREADS, pa, pb, pc, m, n, p);
    }
    check_launch("matmul_kernel");
  }
}

}  // namespace needle_cuda
