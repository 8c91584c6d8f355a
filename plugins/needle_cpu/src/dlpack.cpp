// Host memory shared without copies: Array's buffer protocol, and the contract's to_dlpack /
// from_dlpack. numpy does the DLPack side (capsules, versions, deleters); this file makes the
// numpy arrays and keeps the memory alive.
//
// Lending: a buffer export or a to_dlpack view holds the Array's Storage (array.h), so the
// memory outlives the Array and even Array.free(), until the last view is gone. Borrowing:
// from_dlpack keeps the producer's numpy view (which keeps the producer alive) in the Storage
// and never frees that memory itself. Kernels use unaligned loads and check alignment before
// streaming stores, so a borrowed buffer need not be 64-byte aligned.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "ops.h"

namespace needle_cpu {

namespace py = pybind11;

namespace {

constexpr int kDLCPU = 1;  // DLDeviceType of host memory

const char* buffer_format(DType d) {  // struct-module codes numpy reads back as the dtype
  constexpr const char* formats[kDTypes] = {"f", "d", "i", "q", "?"};
  return formats[int(d)];
}

// What one buffer export holds until it is released.
struct Export {
  std::shared_ptr<Storage> storage;
  Py_ssize_t shape, stride;
};

int array_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  try {
    Array& a = py::handle(self).cast<Array&>();
    auto* held = new Export{a.share(), Py_ssize_t(a.size()), Py_ssize_t(itemsize(a.dtype()))};
    view->obj = self;
    Py_INCREF(self);
    view->buf = a.raw();
    view->len = held->shape * held->stride;
    view->readonly = 0;
    view->itemsize = held->stride;
    view->format = (flags & PyBUF_FORMAT) ? const_cast<char*>(buffer_format(a.dtype())) : nullptr;
    view->ndim = 1;
    view->shape = (flags & PyBUF_ND) ? &held->shape : nullptr;
    view->strides = (flags & PyBUF_STRIDES) ? &held->stride : nullptr;
    view->suboffsets = nullptr;
    view->internal = held;
    return 0;
  } catch (const std::exception& e) {  // a freed Array, say
    view->obj = nullptr;
    PyErr_SetString(PyExc_BufferError, e.what());
    return -1;
  }
}

void array_releasebuffer(PyObject*, Py_buffer* view) {
  delete static_cast<Export*>(view->internal);
}

}  // namespace

void enable_buffer_protocol(py::handle array_type) {
  // pybind11 made the type with buffer slots (py::buffer_protocol()); ours also hear the
  // release, which pybind11's def_buffer cannot tell a holder.
  auto* heap = reinterpret_cast<PyHeapTypeObject*>(array_type.ptr());
  heap->as_buffer.bf_getbuffer = array_getbuffer;
  heap->as_buffer.bf_releasebuffer = array_releasebuffer;
}

py::array to_dlpack(Array& arr, const Shape& shape, const Shape& strides, int64_t offset) {
  check_dims(shape);
  const int64_t n = check_view(arr.size(), shape, strides, offset);
  const auto item = int64_t(itemsize(arr.dtype()));
  std::vector<py::ssize_t> bytes(strides.size());
  for (size_t i = 0; i < strides.size(); ++i) bytes[i] = py::ssize_t(strides[i] * item);
  auto* held = new std::shared_ptr<Storage>(arr.share());
  py::capsule base(held, [](void* p) { delete static_cast<std::shared_ptr<Storage>*>(p); });
  char* start = static_cast<char*>(arr.raw()) + (n == 0 ? 0 : offset * item);
  return py::array(numpy_dtype(arr.dtype()),
                   std::vector<py::ssize_t>(shape.begin(), shape.end()), bytes, start, base);
}

py::tuple from_dlpack(const py::object& obj) {
  if (!py::hasattr(obj, "__dlpack__"))
    throw py::type_error("from_dlpack needs an object with __dlpack__");
  const auto device = obj.attr("__dlpack_device__")().cast<py::tuple>();
  const int kind = device[0].cast<int>();
  if (kind != kDLCPU)
    throw py::buffer_error("needle-cpu shares host memory only, not DLPack device type " +
                           std::to_string(kind));
  const auto shared = py::module_::import("numpy").attr("from_dlpack")(obj).cast<py::array>();
  const std::string dtype = py::str(shared.dtype()).cast<std::string>();
  DType d;
  try {
    d = parse_dtype(dtype);
  } catch (const py::value_error&) {
    throw py::buffer_error("needle-cpu cannot hold " + dtype + " data");
  }
  if (!shared.dtype().equal(numpy_dtype(d)))  // a byte order that is not the machine's
    throw py::buffer_error("needle-cpu cannot hold " + dtype + " data in that byte order");
  const int flags = shared.flags();
  if (!(flags & py::array::c_style))
    throw py::buffer_error("the producer's memory is not one C-contiguous block");
  if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::buffer_error("the producer's memory is not aligned to its elements");
  if (!(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_))
    throw py::buffer_error("the producer's memory is read-only");
  auto storage = std::make_shared<Storage>(const_cast<void*>(shared.data()), 0,
                                           shared.inc_ref().ptr());  // released by Storage
  py::tuple shape(shared.ndim());
  for (py::ssize_t i = 0; i < shared.ndim(); ++i) shape[i] = py::int_(shared.shape(i));
  auto handle = std::make_unique<Array>(std::move(storage), int64_t(shared.size()), d);
  return py::make_tuple(py::cast(std::move(handle)), shape);
}

}  // namespace needle_cpu
