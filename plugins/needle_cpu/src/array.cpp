// The out-of-line parts of array.h: dtype names, checks, Storage.

#include "array.h"

#include <pybind11/pybind11.h>

namespace needle_cpu {

void fail(const std::string& msg) { throw pybind11::value_error(msg); }

void warn(const std::string& msg) {
  if (PyErr_WarnEx(PyExc_RuntimeWarning, msg.c_str(), 1) != 0) throw pybind11::error_already_set();
}

std::string str(const Shape& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

namespace {
constexpr const char* kNames[kDTypes] = {"float32", "float64", "int32", "int64", "bool"};
}

const char* name(DType d) { return kNames[int(d)]; }

DType parse_dtype(const std::string& s) {
  for (int i = 0; i < kDTypes; ++i)
    if (s == kNames[i]) return DType(i);
  fail("needle-cpu holds float32, float64, int32, int64 and bool, not '" + s + "'");
}

namespace {
PyObject* const* interned_names() {  // made once, with the GIL, and never freed
  static PyObject* const* names = [] {
    auto* t = new PyObject*[kDTypes];
    for (int i = 0; i < kDTypes; ++i) t[i] = PyUnicode_InternFromString(kNames[i]);
    return t;
  }();
  return names;
}
}  // namespace

void* name_object(DType d) { return interned_names()[int(d)]; }

DType dtype_from(void* py_name) {
  auto* obj = static_cast<PyObject*>(py_name);
  PyObject* const* names = interned_names();
  for (int i = 0; i < kDTypes; ++i)
    if (obj == names[i]) return DType(i);  // the dtype strings of Python code are interned
  if (!PyUnicode_Check(obj))
    throw pybind11::type_error(std::string("dtype must be a str, not ") + Py_TYPE(obj)->tp_name);
  const char* s = PyUnicode_AsUTF8(obj);
  if (s == nullptr) throw pybind11::error_already_set();
  return parse_dtype(s);
}

Storage::~Storage() {
  if (owner != nullptr) Py_DECREF(static_cast<PyObject*>(owner));  // holders have the GIL
  else deallocate(data, bytes);
}

void differ(const Array& a, const Array& out) {
  if (a.size() != out.size())
    fail("buffer sizes differ: " + std::to_string(a.size()) + ", out " +
         std::to_string(out.size()));
  fail(std::string("buffer dtypes differ: ") + name(a.dtype()) + ", out " + name(out.dtype()));
}

void differ(const Array& a, const Array& b, const Array& out) {
  if (a.size() != out.size() || b.size() != out.size())
    fail("buffer sizes differ: " + std::to_string(a.size()) + ", " + std::to_string(b.size()) +
         ", out " + std::to_string(out.size()));
  fail(std::string("buffer dtypes differ: ") + name(a.dtype()) + ", " + name(b.dtype()) +
       ", out " + name(out.dtype()));
}

void want(const Array& a, DType d, const char* what) {
  if (a.dtype() != d) fail(std::string(what) + " " + name(d) + ", not " + name(a.dtype()));
}

int64_t check_view(int64_t size, const Shape& shape, const Shape& strides, int64_t offset) {
  if (shape.size() != strides.size())
    fail("bad view: shape " + str(shape) + " has " + std::to_string(shape.size()) +
         " dims, strides " + str(strides) + " has " + std::to_string(strides.size()));
  int64_t n = 1, lo = offset, hi = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) fail("bad view: negative dimension in shape " + str(shape));
    n = checked_mul(n, shape[i]);
  }
  if (n == 0) return 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t reach = checked_mul(shape[i] - 1, strides[i]);
    int64_t& end = reach < 0 ? lo : hi;
    end = checked_add(end, reach);
  }
  if (lo < 0 || hi >= size)
    fail("view (shape=" + str(shape) + ", strides=" + str(strides) +
         ", offset=" + std::to_string(offset) + ") is outside a buffer of " +
         std::to_string(size));
  return n;
}

}  // namespace needle_cpu
