// needle-cuda: every function of the needle backend contract (needle/contract.py) as CUDA
// kernels, bound with pybind11 as needle_cuda._ext. Handles are float32 buffers from cudaMalloc;
// strides and offsets count elements. Every CUDA call is checked and a failure becomes a Python
// exception carrying CUDA's message. Importing the module never touches the device.
#ifndef NEEDLE_CUDA_EMULATE  // tests/emulate/cuda_shim.h stands in for CUDA on a CPU
#include <cuda_runtime.h>
#endif
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels.cuh"

namespace py = pybind11;

namespace needle_cuda {

// ------------------------------------------------------------------------- device memory

// Freed buffers are kept for reuse, by size rounded up (512 B below 1 MiB, else 2 MiB), up to
// NEEDLE_CUDA_CACHE_MB megabytes (default 2048; 0 turns the cache off). Why: cudaFree waits for
// the whole device, so freeing each temporary would stall the host on every op. Reuse is safe
// because every kernel and copy runs on the one default stream, in order. When cudaMalloc
// runs out of memory the cache is emptied and the allocation tried once more.
class DeviceMemory {
 public:
  static DeviceMemory& instance() {
    static DeviceMemory* memory = new DeviceMemory();  // never destroyed: outlives every Array
    return *memory;
  }

  void* allocate(size_t bytes, const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t size = rounded(bytes);
    auto bin = free_.find(size);
    if (bin != free_.end() && !bin->second.empty()) {
      void* ptr = bin->second.back();
      bin->second.pop_back();
      cached_ -= size;
      return ptr;
    }
    void* ptr = nullptr;
    cudaError_t err = cudaMalloc(&ptr, size);
    if (err == cudaErrorMemoryAllocation && cached_ > 0) {
      cudaGetLastError();
      empty_locked();
      err = cudaMalloc(&ptr, size);
    }
    check(err, what);
    return ptr;
  }

  void release(void* ptr, size_t bytes) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t size = rounded(bytes);
    if (cached_ + size <= limit_) {
      try {
        free_[size].push_back(ptr);
        cached_ += size;
        return;
      } catch (...) {  // no memory for the bookkeeping: free it for real
      }
    }
    cudaFree(ptr);  // errors ignored: called from destructors
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    empty_locked();
  }

  size_t cached() const { return cached_; }

 private:
  DeviceMemory() {
    const char* env = std::getenv("NEEDLE_CUDA_CACHE_MB");
    const long long mb = env != nullptr ? std::atoll(env) : 2048;
    limit_ = mb > 0 ? static_cast<size_t>(mb) << 20 : 0;
  }
  static size_t rounded(size_t bytes) {
    const size_t quantum = bytes < (size_t{1} << 20) ? 512 : (size_t{2} << 20);
    return (bytes + quantum - 1) / quantum * quantum;
  }
  void empty_locked() {
    for (auto& bin : free_)
      for (void* ptr : bin.second) cudaFree(ptr);
    free_.clear();
    cached_ = 0;
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  size_t limit_ = 0;
};

// --------------------------------------------------------------------------------- the handle

class CudaArray {
 public:
  explicit CudaArray(int64_t size) : size_(size) {
    if (size < 0) throw py::value_error("Array size must be >= 0, got " + std::to_string(size));
    if (size > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(sizeof(float)))
      throw py::value_error("Array size " + std::to_string(size) + " is too large");
    if (size == 0) return;
    const size_t bytes = static_cast<size_t>(size) * sizeof(float);
    ptr_ = static_cast<float*>(DeviceMemory::instance().allocate(
        bytes,
        "cudaMalloc of " + std::to_string(bytes) + " bytes (Array(" + std::to_string(size) + "))"));
  }
  ~CudaArray() { release(); }
  CudaArray(const CudaArray&) = delete;
  CudaArray& operator=(const CudaArray&) = delete;

  float* data() const {
    if (freed_) throw py::value_error("this cuda Array was freed");
    return ptr_;
  }
  int64_t size() const { return size_; }
  uintptr_t address() const { return reinterpret_cast<uintptr_t>(data()); }
  void release() noexcept {  // back to the cache (see DeviceMemory)
    if (freed_) return;
    freed_ = true;
    if (ptr_ != nullptr) DeviceMemory::instance().release(ptr_, size_ * sizeof(float));
    ptr_ = nullptr;
  }

 private:
  float* ptr_ = nullptr;
  int64_t size_ = 0;
  bool freed_ = false;
};

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

void compact(const CudaArray& a, CudaArray& out, const Dims& shape, const Dims& strides,
             int64_t offset) {
  const View v = make_view("compact", a.size(), shape, strides, offset);
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
  const View v = make_view("ewise_setitem", out.size(), shape, strides, offset);
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
  launch_ewise_setitem(src, out.data(), v);
}

void scalar_setitem(int64_t size, float val, CudaArray& out, const Dims& shape, const Dims& strides,
                    int64_t offset) {
  const View v = make_view("scalar_setitem", out.size(), shape, strides, offset);
  if (size != v.numel)
    throw py::value_error("scalar_setitem: size " + std::to_string(size) +
                          " does not match the view's " + std::to_string(v.numel) + " elements");
  if (v.numel == 0) return;
  launch_scalar_setitem(val, out.data(), v);
}

// ------------------------------------------------------------------------- host transfers

py::array_t<float> to_numpy(const CudaArray& a, const Dims& shape, const Dims& strides,
                            int64_t offset) {
  const View v = make_view("to_numpy", a.size(), shape, strides, offset);
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

template <typename Op>
void ewise(const char* fn, const CudaArray& a, const CudaArray& b, CudaArray& out) {
  same_size(fn, a, "a", b, "b");
  same_size(fn, a, "a", out, "out");
  launch_ewise<Op>(a.data(), b.data(), out.data(), out.size(), fn);
}

template <typename Op>
void unary(const char* fn, const CudaArray& a, CudaArray& out, Op op) {
  same_size(fn, a, "a", out, "out");
  launch_unary(a.data(), out.data(), out.size(), op, fn);
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
  // out overlapping an input would be read while written: compute into a temporary
  const bool alias = &out == &a || &out == &b;
  CudaArray tmp(alias ? out.size() : 0);
  float* dest = alias ? tmp.data() : out.data();
  launch_matmul(a.data(), b.data(), dest, batch, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(p));
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
  auto version = [](int v) {
    return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
  };
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
  const std::string name =
      "device " + std::to_string(dev) + " (" + prop.name + ", compute capability " + cc + ")";
  cudaFuncAttributes attr{};
  err = cudaFuncGetAttributes(&attr, probe_kernel);
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction ||
      err == cudaErrorUnsupportedPtxVersion) {
    cudaGetLastError();
    return py::str(name + " is not covered by the architectures this needle-cuda was built for (" +
                   NEEDLE_CUDA_ARCHS + "): reinstall with -C cmake.define.NEEDLE_CUDA_ARCHS=" +
                   std::to_string(prop.major) + std::to_string(prop.minor) + " (" + describe(err) +
                   ")");
  }
  // Run a kernel once: catches everything else (compute-prohibited mode, JIT failures).
  int* flag = nullptr;
  int seen = 0;
  if (err == cudaSuccess) err = cudaMalloc(reinterpret_cast<void**>(&flag), sizeof(int));
  if (err == cudaSuccess) {
    launch(probe_kernel, 1, 1, flag);
    err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaMemcpy(&seen, flag, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(flag);
  }
  if (err != cudaSuccess || seen != 42) {
    cudaGetLastError();
    return py::str(
        name + " cannot run needle-cuda's kernels: " +
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
      .def("free", &CudaArray::release,
           "Release the device memory now (to the cache); later use raises ValueError.");

  m.def("unavailable_reason", &unavailable_reason,
        "None when a usable GPU is present, else a short reason.");
  m.def(
      "empty_cache", [] { DeviceMemory::instance().empty(); },
      "Return the cached free buffers to the driver (see NEEDLE_CUDA_CACHE_MB).");
  m.def(
      "cached_bytes", [] { return DeviceMemory::instance().cached(); },
      "Bytes of freed buffers kept for reuse.");
  m.def(
      "synchronize", [] { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); },
      "Wait for every queued kernel (for timing).");
  m.def("to_numpy", &nc::to_numpy, py::arg("a"), py::arg("shape"), py::arg("strides"),
        py::arg("offset"));
  m.def("from_numpy", &nc::from_numpy, py::arg("arr"), py::arg("out"));
  m.def("fill", &nc::fill, py::arg("out"), py::arg("val"));
  m.def("compact", &nc::compact, py::arg("a"), py::arg("out"), py::arg("shape"), py::arg("strides"),
        py::arg("offset"));
  m.def("ewise_setitem", &nc::ewise_setitem, py::arg("a"), py::arg("out"), py::arg("shape"),
        py::arg("strides"), py::arg("offset"));
  m.def("scalar_setitem", &nc::scalar_setitem, py::arg("size"), py::arg("val"), py::arg("out"),
        py::arg("shape"), py::arg("strides"), py::arg("offset"));

#define NEEDLE_EWISE(name, Op)                                                                     \
  m.def(                                                                                           \
      #name,                                                                                       \
      [](const CudaArray& a, const CudaArray& b, CudaArray& out) { ewise<Op>(#name, a, b, out); }, \
      py::arg("a"), py::arg("b"), py::arg("out"))
#define NEEDLE_SCALAR(name, Op)                                                              \
  m.def(                                                                                     \
      #name,                                                                                 \
      [](const CudaArray& a, float val, CudaArray& out) { scalar<Op>(#name, a, val, out); }, \
      py::arg("a"), py::arg("val"), py::arg("out"))
#define NEEDLE_UNARY(name, Op)                                                                     \
  m.def(                                                                                           \
      #name, [](const CudaArray& a, CudaArray& out) { unary(#name, a, out, Op{}); }, py::arg("a"), \
      py::arg("out"))

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
  NEEDLE_SCALAR(scalar_power, ScalarPow);
  NEEDLE_SCALAR(scalar_maximum, Max);
  NEEDLE_SCALAR(scalar_eq, Eq);
  NEEDLE_SCALAR(scalar_ge, Ge);
  NEEDLE_UNARY(ewise_log, Log);
  NEEDLE_UNARY(ewise_exp, Exp);
  NEEDLE_UNARY(ewise_tanh, Tanh);

  m.def(
      "matmul",
      [](const CudaArray& a, const CudaArray& b, CudaArray& out, int64_t m_, int64_t n, int64_t p) {
        gemm("matmul", a, b, out, 1, m_, n, p);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("m"), py::arg("n"), py::arg("p"));
  m.def(
      "bmm",
      [](const CudaArray& a, const CudaArray& b, CudaArray& out, int64_t batch, int64_t m_,
         int64_t n, int64_t p) { gemm("bmm", a, b, out, batch, m_, n, p); },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("batch"), py::arg("m"), py::arg("n"),
      py::arg("p"));
  m.def(
      "reduce_sum",
      [](const CudaArray& a, CudaArray& out, int64_t reduce_size) {
        reduce<SumOp>("reduce_sum", a, out, reduce_size);
      },
      py::arg("a"), py::arg("out"), py::arg("reduce_size"));
  m.def(
      "reduce_max",
      [](const CudaArray& a, CudaArray& out, int64_t reduce_size) {
        reduce<MaxOp>("reduce_max", a, out, reduce_size);
      },
      py::arg("a"), py::arg("out"), py::arg("reduce_size"));
}
