// needle-cuda: every function of the needle backend contract (needle/contract.py) as CUDA
// kernels, bound with pybind11 as needle_cuda._ext. Handles are float32 buffers from cudaMalloc;
// strides and offsets count elements. Every CUDA call is checked and a failure becomes a Python
// exception carrying CUDA's message. Importing the module never touches the device.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "matmul.cuh"

namespace py = pybind11;

namespace needle_cuda {

using index_t = int64_t;
using Dims = std::vector<int64_t>;
constexpr int kMaxDims = 16;    // dimensions of a strided view after merging contiguous ones
constexpr int kThreads = 256;   // threads per block of the elementwise and reduction kernels
constexpr int kMaxInt = std::numeric_limits<int>::max();

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

void check_launch(const char* kernel) { check(cudaGetLastError(), std::string("launching ") + kernel); }

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

// --------------------------------------------------------------------------------- the handle

class CudaArray {
 public:
  explicit CudaArray(int64_t size) : size_(size) {
    if (size < 0) throw py::value_error("Array size must be >= 0, got " + std::to_string(size));
    if (size > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(sizeof(float)))
      throw py::value_error("Array size " + std::to_string(size) + " is too large");
    if (size == 0) return;
    const size_t bytes = static_cast<size_t>(size) * sizeof(float);
    check(cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes),
          "cudaMalloc of " + std::to_string(bytes) + " bytes (Array(" + std::to_string(size) + "))");
  }
  ~CudaArray() {
    if (ptr_ != nullptr) cudaFree(ptr_);  // errors ignored: nothing can be raised here
  }
  CudaArray(const CudaArray&) = delete;
  CudaArray& operator=(const CudaArray&) = delete;

  float* data() const {
    if (freed_) throw py::value_error("this cuda Array was freed");
    return ptr_;
  }
  int64_t size() const { return size_; }
  uintptr_t address() const { return reinterpret_cast<uintptr_t>(data()); }
  void release() {
    if (freed_) return;
    freed_ = true;
    float* ptr = ptr_;
    ptr_ = nullptr;
    if (ptr != nullptr) check(cudaFree(ptr), "cudaFree");
  }

 private:
  float* ptr_ = nullptr;
  int64_t size_ = 0;
  bool freed_ = false;
};

// Reusable device scratch for the partial results of split reductions (grown, never shrunk).
float* scratch(index_t count) {
  static float* buffer = nullptr;
  static index_t capacity = 0;
  if (count > capacity) {
    if (buffer != nullptr) check(cudaFree(buffer), "cudaFree (scratch)");
    buffer = nullptr;
    capacity = 0;
    check(cudaMalloc(reinterpret_cast<void**>(&buffer), count * sizeof(float)), "cudaMalloc (scratch)");
    capacity = count;
  }
  return buffer;
}

void same_size(const char* fn, const CudaArray& x, const char* xname, const CudaArray& y,
               const char* yname) {
  if (x.size() != y.size()) {
    std::ostringstream msg;
    msg << fn << ": buffer sizes differ: " << xname << " has " << x.size() << ", " << yname
        << " has " << y.size();
    throw py::value_error(msg.str());
  }
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

// Check that (shape, strides, offset) stays inside `buf` and merge its dimensions.
View make_view(const char* fn, const CudaArray& buf, const Dims& shape, const Dims& strides,
               int64_t offset) {
  auto bad = [&](const std::string& why) {
    return py::value_error(std::string(fn) + ": view (shape=" + dims_text(shape) + ", strides=" +
                           dims_text(strides) + ", offset=" + std::to_string(offset) + ") " + why);
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
    if (lo < 0 || hi >= buf.size())
      throw bad("is outside a buffer of " + std::to_string(buf.size()) + " elements");
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
  v.small = v.numel <= limit && buf.size() <= limit;
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

#define NEEDLE_GRID_STRIDE(I, i, n)                                                 \
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
    transpose_kernel<<<grid, dim3(kTile, 8)>>>(a, out, v.s.shape[0], v.s.shape[1], v.s.offset,
                                               v.s.strides[1]);
    check_launch("transpose_kernel");
    return;
  }
  if (v.small) {
    compact_kernel<int><<<grid_for(v.numel), kThreads>>>(a, out, v.s, static_cast<int>(v.numel));
  } else {
    compact_kernel<index_t><<<grid_for(v.numel), kThreads>>>(a, out, v.s, v.numel);
  }
  check_launch("compact_kernel");
}

void compact(const CudaArray& a, CudaArray& out, const Dims& shape, const Dims& strides,
             int64_t offset) {
  const View v = make_view("compact", a, shape, strides, offset);
  if (out.size() != v.numel)
    throw py::value_error("compact: out has " + std::to_string(out.size()) +
                          " elements, the view has " + std::to_string(v.numel));
  if (&a == &out && v.numel > 0) {  // in place: read from a copy
    CudaArray copy(a.size());
    check(cudaMemcpy(copy.data(), a.data(), a.size() * sizeof(float), cudaMemcpyDeviceToDevice),
          "cudaMemcpy (compact)");
    launch_compact(copy.data(), out.data(), v);
    return;
  }
  launch_compact(a.data(), out.data(), v);
}

void ewise_setitem(const CudaArray& a, CudaArray& out, const Dims& shape, const Dims& strides,
                   int64_t offset) {
  const View v = make_view("ewise_setitem", out, shape, strides, offset);
  if (a.size() != v.numel)
    throw py::value_error("ewise_setitem: a has " + std::to_string(a.size()) +
                          " elements, the view has " + std::to_string(v.numel));
  if (v.numel == 0) return;
  const float* src = a.data();
  CudaArray copy(&a == &out ? a.size() : 0);
  if (&a == &out) {  // writing a buffer into a view of itself: read from a copy
    check(cudaMemcpy(copy.data(), src, a.size() * sizeof(float), cudaMemcpyDeviceToDevice),
          "cudaMemcpy (ewise_setitem)");
    src = copy.data();
  }
  if (v.small) {
    ewise_setitem_kernel<int>
        <<<grid_for(v.numel), kThreads>>>(src, out.data(), v.s, static_cast<int>(v.numel));
  } else {
    ewise_setitem_kernel<index_t><<<grid_for(v.numel), kThreads>>>(src, out.data(), v.s, v.numel);
  }
  check_launch("ewise_setitem_kernel");
}

void scalar_setitem(int64_t size, float val, CudaArray& out, const Dims& shape,
                    const Dims& strides, int64_t offset) {
  const View v = make_view("scalar_setitem", out, shape, strides, offset);
  if (size != v.numel)
    throw py::value_error("scalar_setitem: size " + std::to_string(size) +
                          " does not match the view's " + std::to_string(v.numel) + " elements");
  if (v.numel == 0) return;
  if (v.small) {
    scalar_setitem_kernel<int>
        <<<grid_for(v.numel), kThreads>>>(val, out.data(), v.s, static_cast<int>(v.numel));
  } else {
    scalar_setitem_kernel<index_t><<<grid_for(v.numel), kThreads>>>(val, out.data(), v.s, v.numel);
  }
  check_launch("scalar_setitem_kernel");
}

// ------------------------------------------------------------------------- host transfers

py::array_t<float> to_numpy(const CudaArray& a, const Dims& shape, const Dims& strides,
                            int64_t offset) {
  const View v = make_view("to_numpy", a, shape, strides, offset);
  py::array_t<float> result(shape);
  if (v.numel == 0) return result;
  const bool dense = v.s.ndim == 0 || (v.s.ndim == 1 && v.s.strides[0] == 1);
  CudaArray tmp(dense ? 0 : v.numel);  // only what the view holds crosses to the host
  const float* src = a.data() + offset;
  if (!dense) {
    launch_compact(a.data(), tmp.data(), v);
    src = tmp.data();
  }
  float* dst = result.mutable_data();
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = cudaMemcpy(dst, src, v.numel * sizeof(float), cudaMemcpyDeviceToHost);
  }
  check(err, "cudaMemcpy device->host (to_numpy)");
  return result;
}

void from_numpy(py::array_t<float, py::array::c_style | py::array::forcecast> arr, CudaArray& out) {
  if (arr.size() != out.size())
    throw py::value_error("from_numpy: the array has " + std::to_string(arr.size()) +
                          " elements, out has " + std::to_string(out.size()));
  if (arr.size() == 0) return;
  const float* src = arr.data();
  float* dst = out.data();
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = cudaMemcpy(dst, src, arr.size() * sizeof(float), cudaMemcpyHostToDevice);
  }
  check(err, "cudaMemcpy host->device (from_numpy)");
}

// ------------------------------------------------------------------------ elementwise ops

struct Add { __device__ float operator()(float x, float y) const { return x + y; } };
struct Mul { __device__ float operator()(float x, float y) const { return x * y; } };
struct Div { __device__ float operator()(float x, float y) const { return x / y; } };
struct Pow { __device__ float operator()(float x, float y) const { return powf(x, y); } };
// numpy's maximum: NaN in either operand gives NaN.
struct Max { __device__ float operator()(float x, float y) const { return (x > y || x != x) ? x : y; } };
struct Eq { __device__ float operator()(float x, float y) const { return x == y ? 1.f : 0.f; } };
struct Ge { __device__ float operator()(float x, float y) const { return x >= y ? 1.f : 0.f; } };
struct Log { __device__ float operator()(float x) const { return logf(x); } };
struct Exp { __device__ float operator()(float x) const { return expf(x); } };
struct Tanh { __device__ float operator()(float x) const { return tanhf(x); } };
template <typename Op>
struct WithScalar {  // x -> op(x, val)
  Op op;
  float val;
  __device__ float operator()(float x) const { return op(x, val); }
};
struct Constant { float val; __device__ float operator()(float) const { return val; } };

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
void ewise(const char* fn, const CudaArray& a, const CudaArray& b, CudaArray& out) {
  same_size(fn, a, "a", b, "b");
  same_size(fn, a, "a", out, "out");
  const index_t n = out.size();
  if (n == 0) return;
  ewise_kernel<<<grid_for((n + 3) / 4), kThreads>>>(a.data(), b.data(), out.data(), n, Op{});
  check_launch(fn);
}

template <typename Op>
void unary(const char* fn, const CudaArray& a, CudaArray& out, Op op) {
  same_size(fn, a, "a", out, "out");
  const index_t n = out.size();
  if (n == 0) return;
  unary_kernel<<<grid_for((n + 3) / 4), kThreads>>>(a.data(), out.data(), n, op);
  check_launch(fn);
}

template <typename Op>
void scalar(const char* fn, const CudaArray& a, float val, CudaArray& out) {
  unary(fn, a, out, WithScalar<Op>{Op{}, val});
}

void fill(CudaArray& out, float val) {
  // a reads nothing with Constant, so out stands in for it
  unary("fill", out, out, Constant{val});
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
  for (index_t row = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
       row < rows; row += warps) {
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
      check(cudaMemcpy(out, in, rows * sizeof(float), cudaMemcpyDeviceToDevice), "cudaMemcpy (reduce)");
    return;
  }
  const bool vec = size % 4 == 0;
  if (size <= 16) {
    reduce_thread_kernel<Op><<<grid_for(rows), kThreads>>>(in, out, rows, size);
  } else if (size <= 2048) {
    const unsigned grid = grid_for(rows * 32);
    if (vec) reduce_warp_kernel<Op, true><<<grid, kThreads>>>(in, out, rows, size);
    else reduce_warp_kernel<Op, false><<<grid, kThreads>>>(in, out, rows, size);
  } else {
    // Few rows: split each into chunks of >= 4096 elements so about 8 blocks run per SM, then
    // reduce the chunk results (rows x chunks) in a second pass.
    const index_t target = 8LL * sm_count();
    index_t chunks = 1;
    if (rows < target)  // at most 2048 chunks, so the second pass never splits again
      chunks = std::max<index_t>(1, std::min({(target + rows - 1) / rows, size / 4096, index_t{2048}}));
    const index_t chunk = ((size + chunks - 1) / chunks + 3) / 4 * 4;
    chunks = (size + chunk - 1) / chunk;
    float* dest = chunks == 1 ? out : scratch(rows * chunks);
    const unsigned grid = static_cast<unsigned>(std::min<index_t>(rows * chunks, kMaxInt));
    if (vec) reduce_block_kernel<Op, true><<<grid, kThreads>>>(in, dest, rows, size, chunk, chunks);
    else reduce_block_kernel<Op, false><<<grid, kThreads>>>(in, dest, rows, size, chunk, chunks);
    check_launch("reduce_block_kernel");
    if (chunks > 1) reduce_rows<Op>(dest, out, rows, chunks);
    return;
  }
  check_launch("reduce kernel");
}

template <typename Op>
void reduce(const char* fn, const CudaArray& a, CudaArray& out, int64_t reduce_size) {
  if (reduce_size <= 0 || a.size() / reduce_size != out.size() || a.size() % reduce_size != 0)
    throw py::value_error(std::string(fn) + ": cannot reduce " + std::to_string(a.size()) +
                          " elements into " + std::to_string(out.size()) + " by " +
                          std::to_string(reduce_size));
  if (out.size() == 0) return;
  reduce_rows<Op>(a.data(), out.data(), out.size(), reduce_size);
}

// ------------------------------------------------------------------------------- matmul

void check_dim(const char* fn, const char* name, int64_t v) {
  if (v < 0 || v > kMaxInt)
    throw py::value_error(std::string(fn) + ": " + name + "=" + std::to_string(v) +
                          " is out of range [0, 2**31)");
}

// out = a @ b for `batch` stacked (m, n) @ (n, p) products, all compact row-major.
void gemm(const char* fn, const CudaArray& a, const CudaArray& b, CudaArray& out, int64_t batch,
          int64_t m, int64_t n, int64_t p) {
  check_dim(fn, "batch", batch);
  check_dim(fn, "m", m);
  check_dim(fn, "n", n);
  check_dim(fn, "p", p);
  const __int128 want_a = static_cast<__int128>(batch) * m * n;
  const __int128 want_b = static_cast<__int128>(batch) * n * p;
  const __int128 want_out = static_cast<__int128>(batch) * m * p;
  if (a.size() != want_a || b.size() != want_b || out.size() != want_out) {
    std::ostringstream msg;
    msg << fn << ": buffer sizes " << a.size() << ", " << b.size() << ", " << out.size()
        << " do not match batch=" << batch << " m=" << m << " n=" << n << " p=" << p;
    throw py::value_error(msg.str());
  }
  if (want_out == 0) return;
  const index_t tiles = ((m + mm::BM - 1) / mm::BM) * ((p + mm::BN - 1) / mm::BN);
  if (tiles > kMaxInt) throw py::value_error(std::string(fn) + ": matrices too large");
  // out overlapping an input would be read while written: compute into a temporary
  const bool alias = &out == &a || &out == &b;
  CudaArray tmp(alias ? out.size() : 0);
  float* dest = alias ? tmp.data() : out.data();
  const bool vec = n % 4 == 0 && p % 4 == 0;
  for (index_t first = 0; first < batch; first += 65535) {  // gridDim.z limit
    const unsigned count = static_cast<unsigned>(std::min<index_t>(65535, batch - first));
    const dim3 grid(static_cast<unsigned>(tiles), 1, count);
    const float* pa = a.data() + first * m * n;
    const float* pb = b.data() + first * n * p;
    float* pc = dest + first * m * p;
    const int im = static_cast<int>(m), in = static_cast<int>(n), ip = static_cast<int>(p);
    if (vec) mm::matmul_kernel<true><<<grid, mm::THREADS>>>(pa, pb, pc, im, in, ip);
    else mm::matmul_kernel<false><<<grid, mm::THREADS>>>(pa, pb, pc, im, in, ip);
    check_launch(fn);
  }
  if (alias)
    check(cudaMemcpy(out.data(), dest, out.size() * sizeof(float), cudaMemcpyDeviceToDevice),
          std::string("cudaMemcpy (") + fn + ")");
}

// ------------------------------------------------------------------------- availability

__global__ void probe_kernel(int* flag) { *flag = 42; }

// None when kernels can run here, else why not. Touches the device (creates the context).
py::object unavailable_reason() {
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);  // 0 when no driver is installed
  cudaRuntimeGetVersion(&runtime);
  auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  const std::string built = "needle-cuda uses CUDA runtime " + version(runtime);
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    if (driver == 0)  // the runtime found no libcuda.so it could load
      return py::str("no CUDA driver (libcuda.so not found or not loadable; " + describe(err) +
                     "); " + built);
    if (err == cudaErrorInsufficientDriver)
      return py::str("CUDA driver " + version(driver) + " is older than the runtime: " + built +
                     " (" + describe(err) + "); update the driver");
    if (err == cudaErrorNoDevice) return py::str("no CUDA device (" + describe(err) + ")");
    return py::str("no usable CUDA device: cudaGetDeviceCount failed (" + describe(err) + ")");
  }
  if (count == 0) return py::str("0 CUDA devices");
  int dev = 0;
  cudaDeviceProp prop{};
  err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaGetDeviceProperties(&prop, dev);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return py::str("cannot query CUDA device: " + describe(err));
  }
  const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
  const std::string name = "device " + std::to_string(dev) + " (" + prop.name + ", compute capability " + cc + ")";
  cudaFuncAttributes attr{};
  err = cudaFuncGetAttributes(&attr, probe_kernel);
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction ||
      err == cudaErrorUnsupportedPtxVersion) {
    cudaGetLastError();
    return py::str(name + " is not covered by the architectures this needle-cuda was built for (" +
                   NEEDLE_CUDA_ARCHS + "): reinstall with -C cmake.define.NEEDLE_CUDA_ARCHS=" +
                   std::to_string(prop.major) + std::to_string(prop.minor) + " (" + describe(err) + ")");
  }
  // Run a kernel once: catches everything else (compute-prohibited mode, JIT failures).
  int* flag = nullptr;
  int seen = 0;
  if (err == cudaSuccess) err = cudaMalloc(reinterpret_cast<void**>(&flag), sizeof(int));
  if (err == cudaSuccess) {
    probe_kernel<<<1, 1>>>(flag);
    err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaMemcpy(&seen, flag, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(flag);
  }
  if (err != cudaSuccess || seen != 42) {
    cudaGetLastError();
    return py::str(name + " cannot run needle-cuda's kernels: " +
                   (err != cudaSuccess ? describe(err) : std::string("probe kernel gave a wrong result")));
  }
  return py::none();
}

}  // namespace needle_cuda

PYBIND11_MODULE(_ext, m) {
  using namespace needle_cuda;
  namespace nc = needle_cuda;
  m.doc() = "needle's CUDA backend: the functions of needle.contract as CUDA kernels";
  m.attr("__device_name__") = "cuda";
  m.attr("__build_archs__") = NEEDLE_CUDA_ARCHS;
  m.attr("__cuda_runtime_version__") = CUDART_VERSION;
  py::register_exception<CudaOutOfMemory>(m, "CudaOutOfMemory", PyExc_MemoryError);
  py::register_exception<CudaError>(m, "CudaError", PyExc_RuntimeError);

  py::class_<CudaArray>(m, "Array", "A device buffer of `size` float32 elements (cudaMalloc).")
      .def(py::init<int64_t>(), py::arg("size"))
      .def_property_readonly("size", &CudaArray::size)
      .def("ptr", &CudaArray::address, "The device address, as an integer.")
      .def("free", &CudaArray::release, "Free the device memory now; later use raises ValueError.");

  m.def("unavailable_reason", &unavailable_reason,
        "None when a usable GPU is present, else a short reason.");
  m.def("synchronize", [] { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); },
        "Wait for every queued kernel (for timing).");
  m.def("to_numpy", &nc::to_numpy, py::arg("a"), py::arg("shape"), py::arg("strides"), py::arg("offset"));
  m.def("from_numpy", &nc::from_numpy, py::arg("arr"), py::arg("out"));
  m.def("fill", &nc::fill, py::arg("out"), py::arg("val"));
  m.def("compact", &nc::compact, py::arg("a"), py::arg("out"), py::arg("shape"), py::arg("strides"),
        py::arg("offset"));
  m.def("ewise_setitem", &nc::ewise_setitem, py::arg("a"), py::arg("out"), py::arg("shape"),
        py::arg("strides"), py::arg("offset"));
  m.def("scalar_setitem", &nc::scalar_setitem, py::arg("size"), py::arg("val"), py::arg("out"),
        py::arg("shape"), py::arg("strides"), py::arg("offset"));

#define NEEDLE_EWISE(name, Op)                                                          \
  m.def(#name, [](const CudaArray& a, const CudaArray& b, CudaArray& out) {             \
    ewise<Op>(#name, a, b, out);                                                        \
  }, py::arg("a"), py::arg("b"), py::arg("out"))
#define NEEDLE_SCALAR(name, Op)                                                         \
  m.def(#name, [](const CudaArray& a, float val, CudaArray& out) {                      \
    scalar<Op>(#name, a, val, out);                                                     \
  }, py::arg("a"), py::arg("val"), py::arg("out"))
#define NEEDLE_UNARY(name, Op)                                                          \
  m.def(#name, [](const CudaArray& a, CudaArray& out) { unary(#name, a, out, Op{}); }, \
        py::arg("a"), py::arg("out"))

  NEEDLE_EWISE(ewise_add, Add);
  NEEDLE_EWISE(ewise_mul, Mul);
  NEEDLE_EWISE(ewise_div, Div);
  NEEDLE_EWISE(ewise_maximum, Max);
  NEEDLE_EWISE(ewise_eq, Eq);
  NEEDLE_EWISE(ewise_ge, Ge);
  NEEDLE_EWISE(ewise_power, Pow);
  NEEDLE_SCALAR(scalar_add, Add);
  NEEDLE_SCALAR(scalar_mul, Mul);
  NEEDLE_SCALAR(scalar_div, Div);
  NEEDLE_SCALAR(scalar_power, Pow);
  NEEDLE_SCALAR(scalar_maximum, Max);
  NEEDLE_SCALAR(scalar_eq, Eq);
  NEEDLE_SCALAR(scalar_ge, Ge);
  NEEDLE_UNARY(ewise_log, Log);
  NEEDLE_UNARY(ewise_exp, Exp);
  NEEDLE_UNARY(ewise_tanh, Tanh);

  m.def("matmul", [](const CudaArray& a, const CudaArray& b, CudaArray& out, int64_t m_, int64_t n,
                     int64_t p) { gemm("matmul", a, b, out, 1, m_, n, p); },
        py::arg("a"), py::arg("b"), py::arg("out"), py::arg("m"), py::arg("n"), py::arg("p"));
  m.def("bmm", [](const CudaArray& a, const CudaArray& b, CudaArray& out, int64_t batch, int64_t m_,
                  int64_t n, int64_t p) { gemm("bmm", a, b, out, batch, m_, n, p); },
        py::arg("a"), py::arg("b"), py::arg("out"), py::arg("batch"), py::arg("m"), py::arg("n"),
        py::arg("p"));
  m.def("reduce_sum", [](const CudaArray& a, CudaArray& out, int64_t reduce_size) {
    reduce<SumOp>("reduce_sum", a, out, reduce_size);
  }, py::arg("a"), py::arg("out"), py::arg("reduce_size"));
  m.def("reduce_max", [](const CudaArray& a, CudaArray& out, int64_t reduce_size) {
    reduce<MaxOp>("reduce_max", a, out, reduce_size);
  }, py::arg("a"), py::arg("out"), py::arg("reduce_size"));
}
