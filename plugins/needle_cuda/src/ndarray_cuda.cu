// needle-cuda: every function of the needle backend contract v2 (needle/contract.py) as CUDA
// kernels for float32, float64, int32, int64 and bool, bound with pybind11 as needle_cuda._ext.
// Handles carry their dtype; strides and offsets count elements. Every CUDA call is checked and a
// failure becomes a Python exception carrying CUDA's message. Importing the module never touches
// the device. The op lists come from ops.cuh, the dtype table from dtypes.cuh.
#ifndef NEEDLE_CUDA_EMULATE  // tests/emulate/cuda_shim.h stands in for CUDA on a CPU
#include <cuda_runtime.h>
#endif
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <type_traits>

#include "dlpack.cuh"
#include "kernels.cuh"
#include "memory.cuh"

namespace py = pybind11;

namespace needle_cuda {

// ---------------------------------------------------------------------------------- checks

void same_size(const char* fn, const CudaArray& x, const char* xname, const CudaArray& y,
               const char* yname) {
  if (x.size() != y.size()) {
    std::ostringstream msg;
    msg << fn << ": buffer sizes differ: " << xname << " has " << x.size() << ", " << yname
        << " has " << y.size();
    throw py::value_error(msg.str());
  }
}

void same_dtype(const char* fn, const CudaArray& x, const char* xname, const CudaArray& y,
                const char* yname) {
  if (x.dtype() != y.dtype())
    throw py::value_error(std::string(fn) + ": buffer dtypes differ: " + xname + " is " +
                          dtype_name(x.dtype()) + ", " + yname + " is " + dtype_name(y.dtype()));
}

// `val` as the kernel's element type: a Python float for float handles, an int for integer
// handles (out of range: OverflowError, as numpy's), anything with a truth value for bool.
template <typename T>
T scalar_as(py::handle val, const char* fn) {
  if constexpr (std::is_same_v<T, bool>) {
    const int truth = PyObject_IsTrue(val.ptr());
    if (truth < 0) throw py::error_already_set();
    return truth != 0;
  } else if constexpr (std::is_floating_point_v<T>) {
    const double v = PyFloat_AsDouble(val.ptr());
    if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return static_cast<T>(v);
  } else {
    const py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(val.ptr()));
    if (!index) {
      PyErr_Clear();
      throw py::type_error(std::string(fn) + ": an integer handle takes an int, not " +
                           std::string(py::str(py::type::handle_of(val).attr("__name__"))));
    }
    const long long v = PyLong_AsLongLong(index.ptr());
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max())
      throw std::overflow_error(std::string(fn) + ": " + std::to_string(v) +
                                " is out of range for " + dtype_name(dtype_of<T>()));
    return static_cast<T>(v);
  }
}

// The bits of a scalar as the unsigned integer of its width (for fill and scalar_setitem).
template <typename T>
WidthOf<T> bits_of(T value) {
  WidthOf<T> bits{};
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

// ------------------------------------------------------------------------- strided views

void compact(const CudaArray& a, CudaArray& out, const Dims& shape, const Dims& strides,
             int64_t offset) {
  same_dtype("compact", a, "a", out, "out");
  const View v = make_view("compact", a.size(), shape, strides, offset);
  if (out.size() != v.numel)
    throw py::value_error("compact: out has " + std::to_string(out.size()) +
                          " elements, the view has " + std::to_string(v.numel));
  if (v.numel == 0) return;
  dispatch_width(a.dtype(), [&](auto tag) {
    using U = typename decltype(tag)::type;
    if (overlaps(a, out)) {  // in place: read from a copy
      CudaArray copy(a.size(), a.dtype());
      check(cudaMemcpy(copy.raw(), a.raw(), a.nbytes(), cudaMemcpyDeviceToDevice),
            "cudaMemcpy (compact)");
      launch_compact(copy.data<U>(), out.data<U>(), v);
    } else {
      launch_compact(a.data<U>(), out.data<U>(), v);
    }
  });
}

void ewise_setitem(const CudaArray& a, CudaArray& out, const Dims& shape, const Dims& strides,
                   int64_t offset) {
  same_dtype("ewise_setitem", a, "a", out, "out");
  const View v = make_view("ewise_setitem", out.size(), shape, strides, offset);
  if (a.size() != v.numel)
    throw py::value_error("ewise_setitem: a has " + std::to_string(a.size()) +
                          " elements, the view has " + std::to_string(v.numel));
  if (v.numel == 0) return;
  dispatch_width(a.dtype(), [&](auto tag) {
    using U = typename decltype(tag)::type;
    if (overlaps(a, out)) {  // writing a buffer into a view of itself: read from a copy
      CudaArray copy(a.size(), a.dtype());
      check(cudaMemcpy(copy.raw(), a.raw(), a.nbytes(), cudaMemcpyDeviceToDevice),
            "cudaMemcpy (ewise_setitem)");
      launch_ewise_setitem(copy.data<U>(), out.data<U>(), v);
    } else {
      launch_ewise_setitem(a.data<U>(), out.data<U>(), v);
    }
  });
}

void scalar_setitem(int64_t size, py::handle val, CudaArray& out, const Dims& shape,
                    const Dims& strides, int64_t offset) {
  const View v = make_view("scalar_setitem", out.size(), shape, strides, offset);
  if (size != v.numel)
    throw py::value_error("scalar_setitem: size " + std::to_string(size) +
                          " does not match the view's " + std::to_string(v.numel) + " elements");
  dispatch<groups::memory>(out.dtype(), "scalar_setitem", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T value = scalar_as<T>(val, "scalar_setitem");
    if (v.numel > 0) launch_scalar_setitem(bits_of(value), out.data<WidthOf<T>>(), v);
  });
}

void fill(CudaArray& out, py::handle val) {
  dispatch<groups::memory>(out.dtype(), "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T value = scalar_as<T>(val, "fill");
    launch_fill(out.data<WidthOf<T>>(), bits_of(value), out.size());
  });
}

// out = a converted to out's dtype (numpy's astype; see Convert in ops.cuh).
void cast(const CudaArray& a, CudaArray& out) {
  same_size("cast", a, "a", out, "out");
  if (a.size() == 0) return;
  if (a.dtype() == out.dtype()) {
    if (a.raw() != out.raw())
      check(cudaMemcpy(out.raw(), a.raw(), a.nbytes(), cudaMemcpyDeviceToDevice),
            "cudaMemcpy (cast)");
    return;
  }
  dispatch<groups::memory>(a.dtype(), "cast", [&](auto from) {
    using From = typename decltype(from)::type;
    dispatch<groups::memory>(out.dtype(), "cast", [&](auto to) {
      using To = typename decltype(to)::type;
      launch_map1(a.data<From>(), out.data<To>(), a.size(), Convert<To>{}, "cast");
    });
  });
}

// ------------------------------------------------------------------------- host transfers

py::array to_numpy(const CudaArray& a, const Dims& shape, const Dims& strides, int64_t offset) {
  const View v = make_view("to_numpy", a.size(), shape, strides, offset);
  py::array result;
  dispatch<groups::memory>(a.dtype(), "to_numpy", [&](auto tag) {
    result = py::array(py::dtype::of<typename decltype(tag)::type>(), shape);
  });
  if (v.numel == 0) return result;
  const size_t item = itemsize(a.dtype()), bytes = static_cast<size_t>(v.numel) * item;
  const bool dense = v.s.ndim == 0 || (v.s.ndim == 1 && v.s.strides[0] == 1);
  const auto keep = a.buffer();                   // held while the GIL is released below
  CudaArray tmp(dense ? 0 : v.numel, a.dtype());  // only what the view holds crosses to the host
  const char* src = static_cast<const char*>(a.raw()) + offset * static_cast<int64_t>(item);
  if (!dense) {
    dispatch_width(a.dtype(), [&](auto tag) {
      using U = typename decltype(tag)::type;
      launch_compact(a.data<U>(), tmp.data<U>(), v);
    });
    src = static_cast<const char*>(tmp.raw());
  }
  void* dst = result.mutable_data();
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  }
  check(err, "cudaMemcpy device->host (to_numpy)");
  return result;
}

void from_numpy(py::array arr, CudaArray& out) {
  bool same = false;
  dispatch<groups::memory>(out.dtype(), "from_numpy", [&](auto tag) {
    same = arr.dtype().equal(py::dtype::of<typename decltype(tag)::type>());
  });
  if (!same)
    throw py::value_error("from_numpy: the array holds " + std::string(py::str(arr.dtype())) +
                          ", out holds " + dtype_name(out.dtype()));
  if (arr.size() != out.size())
    throw py::value_error("from_numpy: the array has " + std::to_string(arr.size()) +
                          " elements, out has " + std::to_string(out.size()));
  if (arr.size() == 0) return;
  if (!(arr.flags() & py::array::c_style))
    arr = py::module_::import("numpy").attr("ascontiguousarray")(arr);
  const auto keep = out.buffer();  // held while the GIL is released below
  const void* src = arr.data();
  void* dst = out.raw();
  const size_t bytes = out.nbytes();
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  }
  check(err, "cudaMemcpy host->device (from_numpy)");
}

// ------------------------------------------------------------------------ elementwise ops

template <typename Op, unsigned Mask>
void ewise(const char* fn, const CudaArray& a, const CudaArray& b, CudaArray& out) {
  same_size(fn, a, "a", b, "b");
  same_size(fn, a, "a", out, "out");
  same_dtype(fn, a, "a", b, "b");
  same_dtype(fn, a, "a", out, "out");
  dispatch<Mask>(a.dtype(), fn, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map2(a.data<T>(), b.data<T>(), out.data<T>(), a.size(), Op{}, fn);
  });
}

// x ** val: numpy's shortcuts for floats (see Sqrt in ops.cuh), integers by squaring.
template <typename T>
void scalar_power(const CudaArray& a, T val, CudaArray& out, const char* fn) {
  const T* x = a.data<T>();
  T* z = out.data<T>();
  const int64_t n = a.size();
  if constexpr (std::is_floating_point_v<T>) {
    if (val == T(0.5)) return launch_map1(x, z, n, Sqrt{}, fn);
    if (val == T(2)) return launch_map1(x, z, n, Square{}, fn);
    if (val == T(-1)) return launch_map1(x, z, n, Reciprocal{}, fn);
    if (val == T(1)) return launch_map1(x, z, n, Identity{}, fn);
  } else if (val < 0) {
    throw py::value_error(std::string(fn) +
                          ": integers to negative integer powers are not allowed");
  }
  launch_map1(x, z, n, WithScalar<Power, T>{Power{}, val}, fn);
}

template <typename Op, unsigned Mask>
void scalar(const char* fn, const CudaArray& a, py::handle val, CudaArray& out) {
  same_size(fn, a, "a", out, "out");
  same_dtype(fn, a, "a", out, "out");
  dispatch<Mask>(a.dtype(), fn, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = scalar_as<T>(val, fn);
    if constexpr (std::is_same_v<Op, Power>) {
      scalar_power<T>(a, v, out, fn);
    } else {
      launch_map1(a.data<T>(), out.data<T>(), a.size(), WithScalar<Op, T>{Op{}, v}, fn);
    }
  });
}

void writes_bool(const char* fn, const CudaArray& out) {
  if (out.dtype() != DType::Bool)
    throw py::value_error(std::string(fn) + ": a comparison writes bool, not " +
                          dtype_name(out.dtype()));
}

template <typename Op>
void compare(const char* fn, const CudaArray& a, const CudaArray& b, CudaArray& out) {
  same_size(fn, a, "a", b, "b");
  same_size(fn, a, "a", out, "out");
  same_dtype(fn, a, "a", b, "b");
  writes_bool(fn, out);
  dispatch<groups::compare>(a.dtype(), fn, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map2(a.data<T>(), b.data<T>(), out.data<bool>(), a.size(), Op{}, fn);
  });
}

template <typename Op>
void compare_scalar(const char* fn, const CudaArray& a, py::handle val, CudaArray& out) {
  same_size(fn, a, "a", out, "out");
  writes_bool(fn, out);
  dispatch<groups::compare>(a.dtype(), fn, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = scalar_as<T>(val, fn);
    launch_map1(a.data<T>(), out.data<bool>(), a.size(), WithScalar<Op, T>{Op{}, v}, fn);
  });
}

template <typename Op>
void unary(const char* fn, const CudaArray& a, CudaArray& out) {
  same_size(fn, a, "a", out, "out");
  same_dtype(fn, a, "a", out, "out");
  dispatch<groups::unary>(a.dtype(), fn, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map1(a.data<T>(), out.data<T>(), a.size(), Op{}, fn);
  });
}

// ---------------------------------------------------------------------------- reductions

template <typename Op>
void reduce(const char* fn, const CudaArray& a, CudaArray& out, int64_t reduce_size) {
  if (reduce_size <= 0 || a.size() / reduce_size != out.size() || a.size() % reduce_size != 0)
    throw py::value_error(std::string(fn) + ": cannot reduce " + std::to_string(a.size()) +
                          " elements into " + std::to_string(out.size()) + " by " +
                          std::to_string(reduce_size));
  same_dtype(fn, a, "a", out, "out");
  dispatch<groups::reduce>(a.dtype(), fn, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (out.size() > 0) reduce_rows<T, Op>(a.data<T>(), out.data<T>(), out.size(), reduce_size);
  });
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
  same_dtype(fn, a, "a", b, "b");
  same_dtype(fn, a, "a", out, "out");
  dispatch<groups::matmul>(a.dtype(), fn, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (want_out == 0) return;
    // out overlapping an input would be read while written: compute into a temporary
    const bool alias = overlaps(out, a) || overlaps(out, b);
    CudaArray tmp(alias ? out.size() : 0, out.dtype());
    T* dest = alias ? tmp.data<T>() : out.data<T>();
    launch_matmul(a.data<T>(), b.data<T>(), dest, batch, static_cast<int>(m), static_cast<int>(n),
                  static_cast<int>(p));
    if (alias)
      check(cudaMemcpy(out.raw(), dest, out.nbytes(), cudaMemcpyDeviceToDevice),
            std::string("cudaMemcpy (") + fn + ")");
  });
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
  using dlpack::DLPackView;
  m.doc() = "needle's CUDA backend: the functions of needle.contract (v2) as CUDA kernels";
  m.attr("__device_name__") = "cuda";
  m.attr("__build_archs__") = NEEDLE_CUDA_ARCHS;
  m.attr("__cuda_runtime_version__") = CUDART_VERSION;
  py::dict dtypes;
#define NEEDLE_GROUP_ENTRY(group, mask)                 \
  {                                                     \
    py::list names;                                     \
    for (DType d : kDTypes)                             \
      if ((mask) & bit(d)) names.append(dtype_name(d)); \
    dtypes[#group] = py::tuple(names);                  \
  }
  NEEDLE_GROUPS(NEEDLE_GROUP_ENTRY)
#undef NEEDLE_GROUP_ENTRY
  m.attr("__dtypes__") = dtypes;
  py::register_exception<CudaOutOfMemory>(m, "CudaOutOfMemory", PyExc_MemoryError);
  py::register_exception<CudaError>(m, "CudaError", PyExc_RuntimeError);

  py::class_<CudaArray>(m, "Array",
                        "A device buffer of `size` elements of `dtype` (cudaMalloc, or memory "
                        "shared with a DLPack producer).")
      .def(py::init([](int64_t size, const std::string& dtype) {
             return new CudaArray(size, parse_dtype(dtype));
           }),
           py::arg("size"), py::arg("dtype") = "float32")
      .def_property_readonly("size", &CudaArray::size)
      .def_property_readonly("dtype", [](const CudaArray& a) { return dtype_name(a.dtype()); })
      .def("ptr", &CudaArray::address, "The device address, as an integer.")
      .def("free", &CudaArray::release,
           "Let go of the device memory now (to the cache, once no DLPack export holds it); later "
           "use raises ValueError.")
      .def("__repr__", [](const CudaArray& a) {
        return "Array(" + std::to_string(a.size()) + ", '" + dtype_name(a.dtype()) + "')";
      });

  py::class_<DLPackView>(m, "DLPackView",
                         "A view of a cuda buffer for DLPack consumers (what to_dlpack returns).")
      .def("__dlpack__", &DLPackView::dlpack, py::kw_only(), py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(),
           py::arg("copy") = py::none())
      .def("__dlpack_device__", &DLPackView::dlpack_device);

  // ------------------------------------------------------------------ device services
  m.def("unavailable_reason", &unavailable_reason,
        "None when a usable GPU is present, else a short reason.");
  m.def(
      "synchronize",
      [] {
        cudaError_t err;
        {
          py::gil_scoped_release nogil;
          err = cudaDeviceSynchronize();
        }
        check(err, "cudaDeviceSynchronize");
      },
      "Wait for every queued kernel.");
  m.def(
      "empty_cache", [] { DeviceMemory::instance().empty(); },
      "Return the cached free buffers to the driver (see NEEDLE_CUDA_CACHE_MB).");
  m.def(
      "memory_stats", [] { return DeviceMemory::instance().stats(); },
      "Counters of the buffer cache: allocated_bytes, peak_allocated_bytes, cached_bytes, "
      "cache_limit_bytes, cache_hits, cache_misses.");

  // ------------------------------------------------------------------ memory
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
  m.def("cast", &nc::cast, py::arg("a"), py::arg("out"));
  m.def(
      "to_dlpack",
      [](const CudaArray& a, const Dims& shape, const Dims& strides, int64_t offset) {
        return DLPackView(a, shape, strides, offset);
      },
      py::arg("a"), py::arg("shape"), py::arg("strides"), py::arg("offset"));
  m.def("from_dlpack", &dlpack::consume, py::arg("obj"));

  // ------------------------------------------------------------------ the op lists (ops.cuh)
#define NEEDLE_DEF_ARITHMETIC(name, Op, mask)                      \
  m.def(                                                           \
      "ewise_" #name,                                              \
      [](const CudaArray& a, const CudaArray& b, CudaArray& out) { \
        ewise<Op, mask>("ewise_" #name, a, b, out);                \
      },                                                           \
      py::arg("a"), py::arg("b"), py::arg("out"));                 \
  m.def(                                                           \
      "scalar_" #name,                                             \
      [](const CudaArray& a, py::handle val, CudaArray& out) {     \
        scalar<Op, mask>("scalar_" #name, a, val, out);            \
      },                                                           \
      py::arg("a"), py::arg("val"), py::arg("out"));
#define NEEDLE_DEF_COMPARE_SCALAR(name, Op)                    \
  m.def(                                                       \
      "scalar_" #name,                                         \
      [](const CudaArray& a, py::handle val, CudaArray& out) { \
        compare_scalar<Op>("scalar_" #name, a, val, out);      \
      },                                                       \
      py::arg("a"), py::arg("val"), py::arg("out"));
#define NEEDLE_DEF_COMPARE(name, Op)                               \
  m.def(                                                           \
      "ewise_" #name,                                              \
      [](const CudaArray& a, const CudaArray& b, CudaArray& out) { \
        compare<Op>("ewise_" #name, a, b, out);                    \
      },                                                           \
      py::arg("a"), py::arg("b"), py::arg("out"));                 \
  NEEDLE_DEF_COMPARE_SCALAR(name, Op)
#define NEEDLE_DEF_UNARY(name, Op)                                                                 \
  m.def(                                                                                           \
      "ewise_" #name,                                                                              \
      [](const CudaArray& a, CudaArray& out) { unary<Op>("ewise_" #name, a, out); }, py::arg("a"), \
      py::arg("out"));
#define NEEDLE_DEF_REDUCE(name, Op)                                 \
  m.def(                                                            \
      "reduce_" #name,                                              \
      [](const CudaArray& a, CudaArray& out, int64_t reduce_size) { \
        reduce<Op>("reduce_" #name, a, out, reduce_size);           \
      },                                                            \
      py::arg("a"), py::arg("out"), py::arg("reduce_size"));

  NEEDLE_ARITHMETIC_OPS(NEEDLE_DEF_ARITHMETIC)
  NEEDLE_COMPARE_OPS(NEEDLE_DEF_COMPARE, NEEDLE_DEF_COMPARE_SCALAR)
  NEEDLE_UNARY_OPS(NEEDLE_DEF_UNARY)
  NEEDLE_REDUCE_OPS(NEEDLE_DEF_REDUCE)

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
}
