// needle-cpu: the needle backend contract v2 (needle.contract) in C++, bound with pybind11.
//
// Handles are `Array`s: buffers of one dtype (float32, float64, int32, int64, bool), 64-byte
// aligned, freed with their last Python reference. Every function checks sizes, dtypes and
// views before touching memory and throws a Python exception (ValueError for a bad call);
// kernels never see a bad pointer. Loops run on a small pool of persistent threads
// (NEEDLE_NUM_THREADS, default: the cores this process may use) with the GIL released once
// an input is big enough to pay for it. SIMD bodies live in vmath.h and kernels.h, compiled
// for the baseline and, on x86-64, for AVX2+FMA, chosen at import from the CPU (never an
// illegal instruction). GEMM (matmul, bmm, conv2d after im2col) goes to OpenBLAS from the
// scipy-openblas32 wheel for float32 and float64 (see README.md).
//
// The parts: array.h (handles, dtypes, checks), memory.cpp (the buffer cache), pool.h
// (threads), isa.h, vmath.h and kernels.h (SIMD), oplist.h (the elementwise ops, listed once),
// ops.h (the contract's functions: strided.cpp, elementwise.cpp, gemm.cpp, conv2d.cpp,
// dlpack.cpp). This file is the Python module.

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
  m.doc() = "needle-cpu: the needle backend contract v2 in C++ (see needle.contract)";
  m.attr("__device_name__") = "cpu";
  m.attr("__isa__") = K.name;
  m.attr("__tile_size__") = kTile;
  const py::tuple all = py::make_tuple("float32", "float64", "int32", "int64", "bool");
  const py::tuple numbers = py::make_tuple("float32", "float64", "int32", "int64");
  py::dict dtypes;
  dtypes["memory"] = all;
  for (const char* group : {"arithmetic", "compare", "matmul", "reduce"}) dtypes[group] = numbers;
  dtypes["unary"] = py::make_tuple("float32", "float64");
  m.attr("__dtypes__") = dtypes;

  scipy_openblas_set_num_threads(1);  // our pool does the threading (see gemm)
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

  py::class_<Array> array(m, "Array", py::buffer_protocol(),
                          "A buffer of `size` elements of `dtype` on the host (64-byte aligned "
                          "when allocated here). Supports the buffer protocol: numpy.asarray "
                          "views it without a copy.");
  array
      .def(py::init([](int64_t size, py::handle dtype) {
             return std::make_unique<Array>(size, dtype_from(dtype.ptr()));
           }),
           py::arg("size"),
           py::arg("dtype") = py::reinterpret_borrow<py::str>(
               static_cast<PyObject*>(name_object(DType::float32))))
      .def_property_readonly("size", &Array::size)
      .def_property_readonly("dtype", [](const Array& a) {
        return py::reinterpret_borrow<py::str>(static_cast<PyObject*>(name_object(a.dtype())));
      })
      .def("ptr", [](const Array& a) { return reinterpret_cast<uintptr_t>(a.raw()); })
      .def("free", &free_when_unused,
           "Release the memory now (big buffers to the cache; memory that numpy views or DLPack "
           "consumers share stays until they are gone); any later use raises ValueError.")
      .def("__repr__", [](const Array& a) {
        return "needle_cpu.Array(size=" + std::to_string(a.size()) + ", dtype='" +
               name(a.dtype()) + "')";
      });
  enable_buffer_protocol(array);

  using py::arg;
  m.def("to_numpy", &to_numpy, arg("a"), arg("shape"), arg("strides"), arg("offset"));
  m.def("from_numpy", &from_numpy, arg("arr"), arg("out"));
  m.def("fill", &fill, arg("out"), arg("val"));
  m.def("compact", &compact, arg("a"), arg("out"), arg("shape"), arg("strides"), arg("offset"));
  m.def("ewise_setitem", &ewise_setitem, arg("a"), arg("out"), arg("shape"), arg("strides"),
        arg("offset"));
  m.def("scalar_setitem", &scalar_setitem, arg("size"), arg("val"), arg("out"), arg("shape"),
        arg("strides"), arg("offset"));
  m.def("cast", &cast, arg("a"), arg("out"));

  // The elementwise kernels, from oplist.h's lists.
#define NDL_BIND_ARITHMETIC(op)                                                                  \
  m.def(                                                                                         \
      "ewise_" #op,                                                                              \
      [](const Array& a, const Array& b, Array& out) { binary(Arith::op, a, b, out); }, arg("a"), \
      arg("b"), arg("out"));                                                                     \
  m.def(                                                                                         \
      "scalar_" #op,                                                                             \
      [](const Array& a, py::handle val, Array& out) { scalar(Arith::op, a, val, out); },        \
      arg("a"), arg("val"), arg("out"));
#define NDL_BIND_EWISE_COMPARE(op)                                                               \
  m.def(                                                                                         \
      "ewise_" #op,                                                                              \
      [](const Array& a, const Array& b, Array& out) { compare(Cmp::op, a, b, out); }, arg("a"), \
      arg("b"), arg("out"));
#define NDL_BIND_SCALAR_COMPARE(op)                                                              \
  m.def(                                                                                         \
      "scalar_" #op,                                                                             \
      [](const Array& a, py::handle val, Array& out) { scalar_compare(Cmp::op, a, val, out); },  \
      arg("a"), arg("val"), arg("out"));
#define NDL_BIND_UNARY(op)                                                                 \
  m.def(                                                                                   \
      "ewise_" #op, [](const Array& a, Array& out) { unary(Unary::op, a, out); }, arg("a"), \
      arg("out"));
  NDL_ARITHMETIC(NDL_BIND_ARITHMETIC)
  NDL_COMPARE(NDL_BIND_EWISE_COMPARE)
  NDL_COMPARE(NDL_BIND_SCALAR_COMPARE)
  NDL_SCALAR_COMPARE(NDL_BIND_SCALAR_COMPARE)
  NDL_UNARY(NDL_BIND_UNARY)
#undef NDL_BIND_ARITHMETIC
#undef NDL_BIND_EWISE_COMPARE
#undef NDL_BIND_SCALAR_COMPARE
#undef NDL_BIND_UNARY

  m.def("matmul", &matmul, arg("a"), arg("b"), arg("out"), arg("m"), arg("n"), arg("p"));
  m.def("matmul_t", &matmul_t, arg("a"), arg("b"), arg("out"), arg("m"), arg("n"), arg("p"),
        arg("trans_a"), arg("trans_b"));
  m.def("bmm", &bmm, arg("a"), arg("b"), arg("out"), arg("batch"), arg("m"), arg("n"), arg("p"));
  m.def("matmul_tiled", &matmul_tiled, arg("a"), arg("b"), arg("out"), arg("m"), arg("n"),
        arg("p"));
  m.def("conv2d", &conv2d, arg("a"), arg("weight"), arg("out"), arg("n"), arg("h"), arg("w"),
        arg("cin"), arg("cout"), arg("k"), arg("stride"), arg("padding"));
  m.def("conv2d_grad_weight", &conv2d_grad_weight, arg("a"), arg("grad"), arg("out"), arg("n"),
        arg("h"), arg("w"), arg("cin"), arg("cout"), arg("k"), arg("stride"), arg("padding"));
  m.def("conv2d_grad_input", &conv2d_grad_input, arg("grad"), arg("weight"), arg("out"),
        arg("n"), arg("h"), arg("w"), arg("cin"), arg("cout"), arg("k"), arg("stride"),
        arg("padding"));
  m.def("reduce_sum", &reduce<true>, arg("a"), arg("out"), arg("reduce_size"));
  m.def("reduce_max", &reduce<false>, arg("a"), arg("out"), arg("reduce_size"));

  m.def("broadcast_rows", &broadcast_rows, arg("op"), arg("a"), arg("b"), arg("out"),
        arg("width"));
  m.def("softmax_cross_entropy", &softmax_cross_entropy, arg("logits"), arg("labels"),
        arg("losses"), arg("probs"), arg("n"), arg("k"));
  m.def("softmax_cross_entropy_grad", &softmax_cross_entropy_grad, arg("probs"), arg("labels"),
        arg("g"), arg("out"), arg("n"), arg("k"));
  m.def("batch_norm", &batch_norm, arg("x"), arg("weight"), arg("bias"), arg("out"),
        arg("mean"), arg("invstd"), arg("running_mean"), arg("running_var"), arg("outer"),
        arg("channels"), arg("inner"), arg("eps"), arg("momentum"));
  m.def("batch_norm_grad", &batch_norm_grad, arg("g"), arg("x"), arg("weight"), arg("mean"),
        arg("invstd"), arg("dx"), arg("dweight"), arg("dbias"), arg("outer"), arg("channels"),
        arg("inner"));
  m.def("pack", &pack, arg("arrays"), arg("out"), arg("offsets"));
  m.def("unpack", &unpack, arg("a"), arg("outs"), arg("offsets"), arg("scale"));
  m.def("slices", &slices, arg("a"), arg("offsets"), arg("sizes"));
  m.def("gather_rows", &gather_rows, arg("a"), arg("indices"), arg("out"), arg("count"),
        arg("width"));
  m.def("scatter_add_rows", &scatter_add_rows, arg("a"), arg("indices"), arg("out"),
        arg("count"), arg("width"));
  m.def("sgd_update", &sgd_update, arg("params"), arg("grads"), arg("momenta"), arg("b"),
        arg("one_minus_b"), arg("neg_lr"), arg("weight_decay"));
  m.def("adam_update", &adam_update, arg("params"), arg("grads"), arg("firsts"),
        arg("seconds"), arg("b1"), arg("one_minus_b1"), arg("b2"), arg("one_minus_b2"),
        arg("weight_decay"), arg("step"), arg("eps_hat"));

  m.def("to_dlpack", &to_dlpack, arg("a"), arg("shape"), arg("strides"), arg("offset"),
        "A numpy view of the view of `a` (numpy exports it through DLPack); it shares the "
        "memory and keeps it alive.");
  m.def("from_dlpack", &from_dlpack, arg("obj"),
        "(handle, shape): a handle sharing the C-contiguous host memory of the DLPack producer "
        "`obj`, keeping it alive; BufferError when it cannot be shared.");

  m.def("synchronize", &wait_for_kernels,
        "Wait for the kernels other threads run without the GIL (each call returns when done).");
  m.def("run_program", &run_program, arg("calls"),
        "Run a recorded program, [(kernel name, args), ...], as if each kernel were called in "
        "order: compiled once per list (items replaced since are compiled again), then run "
        "with the GIL released; an item without a native step is called through Python at "
        "its turn.");
  m.def(
      "empty_cache",
      [] {
        forget_dropped_programs();
        empty_cache();
      },
      "Return the cached free buffers to the system (see NEEDLE_CPU_CACHE_MB), and forget the "
      "compiled programs of dropped replays.");
  m.def(
      "memory_stats",
      [] {
        const MemoryStats s = memory_stats();
        py::dict d;
        d["allocated_bytes"] = s.allocated_bytes;
        d["cached_bytes"] = s.cached_bytes;
        d["cached_buffers"] = s.cached_buffers;
        d["limit_bytes"] = s.limit_bytes;
        d["hits"] = s.hits;
        d["misses"] = s.misses;
        return d;
      },
      "allocated_bytes (in use), cached_bytes, cached_buffers, limit_bytes, hits, misses.");
  m.def("set_num_threads", &set_num_threads, arg("n"),
        "Threads for every kernel of this backend: n >= 1, at most 4 per core.");
  m.def("get_num_threads", [] { return g_threads.load(); });
}
