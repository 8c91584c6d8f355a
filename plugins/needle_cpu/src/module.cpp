// needle-cpu: the needle backend contract (needle.contract) in C++, bound with pybind11.
//
// Handles are `Array`s: 64-byte aligned float32 buffers freed with their last Python
// reference. Every function checks its arguments before touching memory and throws a
// Python exception (ValueError for a bad size or view); kernels never see a bad pointer.
// Loops run on a small pool of persistent threads (NEEDLE_NUM_THREADS, default: the cores
// this process may use) with the GIL released once an input is big enough to pay for it.
// SIMD bodies live in kernels.h, compiled for the baseline and, on x86-64, for AVX2+FMA,
// chosen at import from the CPU (never an illegal instruction). GEMM (matmul, bmm, conv2d
// after im2col) goes to OpenBLAS from the scipy-openblas32 wheel (see README.md).
//
// The parts: array.h (handles and checks), memory.cpp (the buffer cache), pool.h (threads), isa.h and kernels.h (SIMD),
// ops.h (the contract's functions: strided.cpp, elementwise.cpp, gemm.cpp, conv2d.cpp).
// This file is the Python module.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include <cblas.h>  // scipy-openblas32's header: every symbol carries a scipy_ prefix

#include "array.h"
#include "isa.h"
#include "ops.h"
#include "pool.h"

namespace py = pybind11;
using namespace needle_cpu;

PYBIND11_MODULE(_ext, m) {
  m.doc() = "needle-cpu: the needle backend contract in C++ (see needle.contract)";
  m.attr("__device_name__") = "cpu";
  m.attr("__isa__") = K.name;
  scipy_openblas_set_num_threads(1);  // our pool does the threading (see sgemm)
  init_threads();
  const py::object main_thread = py::module_::import("threading").attr("main_thread")();
  g_main_thread = main_thread.attr("ident").cast<unsigned long>();  // see MaybeRelease
  // Whatever ran out of memory (a kernel's scratch space, say), the cached buffers go back to
  // the system before the MemoryError reaches Python, so that trying again can succeed.
  py::register_exception_translator([](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const std::bad_alloc&) {
      empty_cache();
      PyErr_SetString(PyExc_MemoryError,
                      "needle-cpu: out of memory (its cached buffers were released)");
    }
  });

  py::class_<Array>(m, "Array", "A 64-byte aligned buffer of float32 on the host.")
      .def(py::init<int64_t>(), py::arg("size"))
      .def_property_readonly("size", &Array::size)
      .def("ptr", [](const Array& a) { return reinterpret_cast<uintptr_t>(a.data()); })
      .def("free", &free_when_unused,
           "Release the memory now (big buffers to the cache); any later use raises ValueError.")
      .def("__repr__", [](const Array& a) {
        return "needle_cpu.Array(size=" + std::to_string(a.size()) + ")";
      });

  using py::arg;
  m.def("to_numpy", &to_numpy, arg("a"), arg("shape"), arg("strides"), arg("offset"));
  m.def("from_numpy", &from_numpy, arg("arr"), arg("out"));
  m.def("fill", &fill, arg("out"), arg("val"));
  m.def("compact", &compact, arg("a"), arg("out"), arg("shape"), arg("strides"), arg("offset"));
  m.def("ewise_setitem", &ewise_setitem, arg("a"), arg("out"), arg("shape"), arg("strides"),
        arg("offset"));
  m.def("scalar_setitem", &scalar_setitem, arg("size"), arg("val"), arg("out"), arg("shape"),
        arg("strides"), arg("offset"));

  const char* binaries[] = {"ewise_add", "ewise_mul", "ewise_div",
                            "ewise_maximum", "ewise_eq", "ewise_ge"};
  const char* scalars[] = {"scalar_add", "scalar_mul", "scalar_div",
                           "scalar_maximum", "scalar_eq", "scalar_ge"};
  for (int op = ADD; op <= GE; ++op) {
    m.def(binaries[op], [op](const Array& a, const Array& b, Array& out) { binary(op, a, b, out); },
          arg("a"), arg("b"), arg("out"));
    m.def(scalars[op], [op](const Array& a, float val, Array& out) { scalar(op, a, val, out); },
          arg("a"), arg("val"), arg("out"));
  }
  m.def("scalar_power", &scalar_power, arg("a"), arg("val"), arg("out"));
  m.def("ewise_power", &ewise_power, arg("a"), arg("b"), arg("out"));
  const char* unaries[] = {"ewise_log", "ewise_exp", "ewise_tanh"};
  for (int op = 0; op < 3; ++op)
    m.def(unaries[op], [op](const Array& a, Array& out) { unary(op, a, out); }, arg("a"),
          arg("out"));

  m.def("matmul", &matmul, arg("a"), arg("b"), arg("out"), arg("m"), arg("n"), arg("p"));
  m.def("bmm", &bmm, arg("a"), arg("b"), arg("out"), arg("batch"), arg("m"), arg("n"), arg("p"));
  m.def("conv2d", &conv2d, arg("a"), arg("weight"), arg("out"), arg("n"), arg("h"), arg("w"),
        arg("cin"), arg("cout"), arg("k"), arg("stride"), arg("padding"));
  m.def("reduce_sum", &reduce<true>, arg("a"), arg("out"), arg("reduce_size"));
  m.def("reduce_max", &reduce<false>, arg("a"), arg("out"), arg("reduce_size"));

  m.def("set_num_threads", &set_num_threads, arg("n"),
        "Threads for every kernel of this backend: n >= 1, at most 4 per core.");
  m.def("get_num_threads", [] { return g_threads.load(); });

  m.def("empty_cache", &empty_cache,
        "Return the cached free buffers to the system (see NEEDLE_CPU_CACHE_MB).");
  m.def(
      "cache_info",
      [] {
        const CacheInfo c = cache_info();
        py::dict d;
        d["cached_bytes"] = c.bytes;
        d["cached_buffers"] = c.buffers;
        d["limit_bytes"] = c.limit;
        d["hits"] = c.hits;
        d["misses"] = c.misses;
        return d;
      },
      "The buffer cache: cached_bytes, cached_buffers, limit_bytes, hits, misses.");
}
