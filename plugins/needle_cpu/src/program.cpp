// run_program: a recorded list of kernel calls (ndl.jit's replay) run natively.
//
// The list, [(kernel name, args), ...], is compiled once into a Program: one C++ call per
// kernel, its handles, views and scalars already taken out of the Python objects (scalars
// converted to the handle's dtype, as the kernel would). Then the Program runs with the GIL
// released, without returning to Python between kernels; each kernel's own guard sees the
// GIL is already released (pool.h). The kernels are the module's own functions, so the
// results are those of calling them one by one, bit for bit.
//
// An item with no native step, or whose arguments its native step does not take as given
// (a wrong type, a bad size), is called as the module's Python function at its turn, with
// the GIL taken back for it: it behaves as when called alone (runs, or raises its own
// exception after the items before it ran). A name that is no kernel of the module is a
// ValueError before anything runs.
//
// Compiled Programs are cached by list: the replay passes the same list object at every step
// and, when host scalars change (Adam's bias corrections, a new learning rate), replaces the
// items that take them. A call compares the list's items with those compiled (pointers: the
// Program holds a reference to each, so none can be a new object at an old address) and
// compiles again only the items that changed. The cache holds a reference to each list and
// forgets a Program once that reference is the only one left (the replay was dropped), at
// the next run_program or empty_cache, or when more than kPrograms lists are cached.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "isa.h"
#include "ops.h"
#include "pool.h"

namespace needle_cpu {

namespace py = pybind11;

namespace {

using Step = std::function<void()>;
using Keep = std::vector<py::object>;  // objects a step points into, kept alive with it
using Compiler = Step (*)(const py::tuple& args, Keep& keep);

constexpr size_t kPrograms = 64;

void expect(const py::tuple& args, size_t n, const char* kernel) {
  if (args.size() != n)
    fail(std::string("run_program: ") + kernel + " takes " + std::to_string(n) +
         " arguments, got " + std::to_string(args.size()));
}

Array* handle(const py::handle& h) { return &h.cast<Array&>(); }
Shape shape(const py::handle& h) { return h.cast<Shape>(); }
int64_t integer(const py::handle& h) { return h.cast<int64_t>(); }
double real(const py::handle& h) { return h.cast<double>(); }

// ------------------------------------------------------------ kernels taking Python scalars
// The loops of elementwise.cpp's scalar() and scalar_compare() and strided.cpp's fill() and
// scalar_setitem(), with the value converted once, when the step is compiled.

template <class T>
void check_scalar_op(Arith op, const char* kernel, DType d, T v) {
  if constexpr (!std::is_floating_point_v<T>) {
    if (op == Arith::div)
      fail(std::string(kernel) + " divides float handles (core casts integers first), not " +
           name(d));
    if (op == Arith::power && v < 0)
      fail(std::string(kernel) + ": integers to negative integer powers are not allowed");
  }
}

Step scalar_step(Arith op, const char* kernel, const py::tuple& args) {
  expect(args, 3, kernel);
  Array *a = handle(args[0]), *out = handle(args[2]);
  same(*a, *out);
  Step step;
  visit_number(out->dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    const T v = scalar_of<T>(args[1]);
    check_scalar_op<T>(op, kernel, out->dtype(), v);
    const int64_t cost = op == Arith::power && v != T(2) ? 8 : 1;
    step = [op, a, out, v, cost] {
      same(*a, *out);
      const T* x = a->data<T>();
      T* z = out->data<T>();
      MaybeRelease gil(out->size() * cost);
      parallel_for(out->size(), cost, [&](int64_t s, int64_t e) {
        K.typed<T>().scalar(int(op), x + s, v, z + s, e - s);
      });
    };
  });
  return step;
}

Step scalar_compare_step(Cmp op, const char* kernel, const py::tuple& args) {
  expect(args, 3, kernel);
  Array *a = handle(args[0]), *out = handle(args[2]);
  if (a->size() != out->size())
    fail(std::string(kernel) + ": buffer sizes differ: " + std::to_string(a->size()) +
         ", out " + std::to_string(out->size()));
  want(*out, DType::bool_, "a comparison writes");
  Step step;
  visit_number(a->dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    const T v = scalar_of<T>(args[1]);
    step = [op, a, out, v] {
      const T* x = a->data<T>();
      uint8_t* z = out->data<uint8_t>();
      MaybeRelease gil(out->size());
      parallel_for(out->size(), 1, [&](int64_t s, int64_t e) {
        K.typed<T>().scalar_compare(int(op), x + s, v, z + s, e - s);
      });
    };
  });
  return step;
}

Step fill_step(const py::tuple& args, Keep&) {
  expect(args, 2, "fill");
  Array* out = handle(args[0]);
  Step step;
  visit(out->dtype(), [&](auto t) {
    using T = decltype(t);
    const T v = scalar_of<T>(args[1]);
    step = [out, v] {
      T* dst = out->data<T>();
      MaybeRelease gil(out->size());
      parallel_for(out->size(), 1, [&](int64_t b, int64_t e) { std::fill(dst + b, dst + e, v); });
    };
  });
  return step;
}

// v into every element of the view (shape, strides, offset) of p: an odometer over the outer
// dimensions, a loop over the last.
template <class T>
void fill_view(T* p, const Shape& shape, const Shape& strides, T v) {
  const size_t nd = shape.size();
  if (nd == 0) return void(*p = v);
  const int64_t inner = shape[nd - 1], step = strides[nd - 1];
  int64_t outer = 1;
  for (size_t i = 0; i + 1 < nd; ++i) outer *= shape[i];
  std::vector<int64_t> idx(nd, 0);
  int64_t at = 0;
  for (int64_t r = 0; r < outer; ++r) {
    for (int64_t j = 0; j < inner; ++j) p[at + j * step] = v;
    for (size_t i = nd - 1; i-- > 0;) {
      at += strides[i];
      if (++idx[i] < shape[i]) break;
      at -= strides[i] * shape[i];
      idx[i] = 0;
    }
  }
}

Step scalar_setitem_step(const py::tuple& args, Keep&) {
  expect(args, 6, "scalar_setitem");
  const int64_t size = integer(args[0]);
  Array* out = handle(args[2]);
  const Shape sh = shape(args[3]), st = shape(args[4]);
  const int64_t offset = integer(args[5]);
  check_dims(sh);
  const int64_t n = check_view(out->size(), sh, st, offset);
  if (n != size)
    fail("scalar_setitem: size " + std::to_string(size) + " does not match the view's " +
         std::to_string(n) + " elements");
  Step step;
  visit(out->dtype(), [&](auto t) {
    using T = decltype(t);
    const T v = scalar_of<T>(args[1]);
    step = [out, sh, st, offset, n, v] {
      if (n > 0) fill_view(out->data<T>() + offset, sh, st, v);
    };
  });
  return step;
}

// A constant made on the host during the trace: its bytes, copied at every run. Natively only
// from a C-contiguous numpy array of out's dtype (the replay's own copy); anything else goes
// through the kernel (which converts with numpy at its turn).
Step from_numpy_step(const py::tuple& args, Keep& keep) {
  expect(args, 2, "from_numpy");
  Array* out = handle(args[1]);
  if (!py::isinstance<py::array>(args[0])) fail("run_program: from_numpy takes a numpy array");
  const auto arr = py::reinterpret_borrow<py::array>(args[0]);
  if (!(arr.flags() & py::array::c_style) || !arr.dtype().equal(numpy_dtype(out->dtype())) ||
      arr.size() != out->size())
    fail("run_program: from_numpy of an array that is not C-contiguous, or not out's dtype "
         "and size");
  keep.push_back(arr);
  const auto* src = static_cast<const char*>(arr.data());
  const size_t bytes = size_t(out->size()) * itemsize(out->dtype());
  return [out, src, bytes] {
    if (bytes) std::memcpy(out->raw(), src, bytes);
  };
}

// ------------------------------------------------------------ the other kernels, as they are

Step optimizer_step(const py::tuple& args, bool adam) {
  const char* kernel = adam ? "adam_update" : "sgd_update";
  expect(args, adam ? 11 : 7, kernel);
  const size_t lists = adam ? 4 : 3;
  auto list = [&](size_t i) { return args[i].cast<py::sequence>(); };
  Group g = adam ? optimizer_group({list(0), list(1), list(2), list(3)}, kernel)
                 : optimizer_group({list(0), list(1), list(2)}, kernel);
  std::vector<double> s;
  for (size_t i = lists; i < args.size(); ++i) s.push_back(real(args[i]));
  if (adam)
    return [g = std::move(g), s] {
      adam_update_group(g, s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    };
  return [g = std::move(g), s] { sgd_update_group(g, s[0], s[1], s[2], s[3]); };
}

#define NDL_VIEW_COPY(fn)                                                          \
  [](const py::tuple& args, Keep&) -> Step {                                       \
    expect(args, 5, #fn);                                                          \
    Array *a = handle(args[0]), *out = handle(args[1]);                            \
    Shape sh = shape(args[2]), st = shape(args[3]);                                \
    const int64_t offset = integer(args[4]);                                       \
    return [a, out, sh, st, offset] { fn(*a, *out, sh, st, offset); };             \
  }
#define NDL_PRODUCT(fn)                                                            \
  [](const py::tuple& args, Keep&) -> Step {                                       \
    expect(args, 6, #fn);                                                          \
    Array *a = handle(args[0]), *b = handle(args[1]), *out = handle(args[2]);      \
    const int64_t m = integer(args[3]), n = integer(args[4]), p = integer(args[5]); \
    return [a, b, out, m, n, p] { fn(*a, *b, *out, m, n, p); };                    \
  }
#define NDL_REDUCE(sum)                                                            \
  [](const py::tuple& args, Keep&) -> Step {                                       \
    expect(args, 3, sum ? "reduce_sum" : "reduce_max");                            \
    Array *a = handle(args[0]), *out = handle(args[1]);                            \
    const int64_t size = integer(args[2]);                                         \
    return [a, out, size] { reduce<sum>(*a, *out, size); };                        \
  }
// (a, b|indices|labels, c, out, n, k) kernels of four handles and two sizes
#define NDL_FOUR_HANDLES(fn)                                                       \
  [](const py::tuple& args, Keep&) -> Step {                                       \
    expect(args, 6, #fn);                                                          \
    Array *a = handle(args[0]), *b = handle(args[1]), *c = handle(args[2]);        \
    Array* d = handle(args[3]);                                                    \
    const int64_t n = integer(args[4]), k = integer(args[5]);                      \
    return [a, b, c, d, n, k] { fn(*a, *b, *c, *d, n, k); };                       \
  }
#define NDL_ROWS(fn)                                                               \
  [](const py::tuple& args, Keep&) -> Step {                                       \
    expect(args, 5, #fn);                                                          \
    Array *a = handle(args[0]), *idx = handle(args[1]), *out = handle(args[2]);    \
    const int64_t count = integer(args[3]), width = integer(args[4]);              \
    return [a, idx, out, count, width] { fn(*a, *idx, *out, count, width); };      \
  }
// conv2d and its gradients: three handles and eight sizes
#define NDL_CONV(fn)                                                               \
  [](const py::tuple& args, Keep&) -> Step {                                       \
    expect(args, 11, #fn);                                                         \
    Array *a = handle(args[0]), *b = handle(args[1]), *out = handle(args[2]);      \
    int64_t v[8];                                                                  \
    for (int i = 0; i < 8; ++i) v[i] = integer(args[3 + i]);                       \
    return [a, b, out, v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3], v4 = v[4], v5 = v[5], \
            v6 = v[6], v7 = v[7]] { fn(*a, *b, *out, v0, v1, v2, v3, v4, v5, v6, v7); }; \
  }

const std::unordered_map<std::string, Compiler>& compilers() {
  static const auto* table = [] {
    auto* t = new std::unordered_map<std::string, Compiler>{
        {"fill", fill_step},
        {"scalar_setitem", scalar_setitem_step},
        {"from_numpy", from_numpy_step},
        {"compact", NDL_VIEW_COPY(compact)},
        {"ewise_setitem", NDL_VIEW_COPY(ewise_setitem)},
        {"cast",
         [](const py::tuple& args, Keep&) -> Step {
           expect(args, 2, "cast");
           Array *a = handle(args[0]), *out = handle(args[1]);
           return [a, out] { cast(*a, *out); };
         }},
        {"matmul", NDL_PRODUCT(matmul)},
        {"matmul_tiled", NDL_PRODUCT(matmul_tiled)},
        {"matmul_t",
         [](const py::tuple& args, Keep&) -> Step {
           expect(args, 8, "matmul_t");
           Array *a = handle(args[0]), *b = handle(args[1]), *out = handle(args[2]);
           const int64_t m = integer(args[3]), n = integer(args[4]), p = integer(args[5]);
           const bool ta = args[6].cast<bool>(), tb = args[7].cast<bool>();
           return [a, b, out, m, n, p, ta, tb] { matmul_t(*a, *b, *out, m, n, p, ta, tb); };
         }},
        {"bmm",
         [](const py::tuple& args, Keep&) -> Step {
           expect(args, 7, "bmm");
           Array *a = handle(args[0]), *b = handle(args[1]), *out = handle(args[2]);
           const int64_t batch = integer(args[3]), m = integer(args[4]), n = integer(args[5]),
                         p = integer(args[6]);
           return [a, b, out, batch, m, n, p] { bmm(*a, *b, *out, batch, m, n, p); };
         }},
        {"conv2d", NDL_CONV(conv2d)},
        {"conv2d_grad_weight", NDL_CONV(conv2d_grad_weight)},
        {"conv2d_grad_input", NDL_CONV(conv2d_grad_input)},
        {"reduce_sum", NDL_REDUCE(true)},
        {"reduce_max", NDL_REDUCE(false)},
        {"broadcast_rows",
         [](const py::tuple& args, Keep&) -> Step {
           expect(args, 5, "broadcast_rows");
           const std::string op = args[0].cast<std::string>();
           Array *a = handle(args[1]), *b = handle(args[2]), *out = handle(args[3]);
           const int64_t width = integer(args[4]);
           return [op, a, b, out, width] { broadcast_rows(op, *a, *b, *out, width); };
         }},
        {"softmax_cross_entropy", NDL_FOUR_HANDLES(softmax_cross_entropy)},
        {"softmax_cross_entropy_grad", NDL_FOUR_HANDLES(softmax_cross_entropy_grad)},
        {"batch_norm",
         [](const py::tuple& args, Keep&) -> Step {
           expect(args, 13, "batch_norm");
           Array* h[8];
           for (int i = 0; i < 8; ++i) h[i] = handle(args[i]);
           const int64_t outer = integer(args[8]), channels = integer(args[9]),
                         inner = integer(args[10]);
           const double eps = real(args[11]), momentum = real(args[12]);
           return [x = h[0], w = h[1], b = h[2], out = h[3], m = h[4], inv = h[5], rm = h[6],
                   rv = h[7], outer, channels, inner, eps, momentum] {
             batch_norm(*x, *w, *b, *out, *m, *inv, *rm, *rv, outer, channels, inner, eps,
                        momentum);
           };
         }},
        {"batch_norm_grad",
         [](const py::tuple& args, Keep&) -> Step {
           expect(args, 11, "batch_norm_grad");
           Array* h[8];
           for (int i = 0; i < 8; ++i) h[i] = handle(args[i]);
           const int64_t outer = integer(args[8]), channels = integer(args[9]),
                         inner = integer(args[10]);
           return [g = h[0], x = h[1], w = h[2], m = h[3], inv = h[4], dx = h[5], dw = h[6],
                   db = h[7], outer, channels, inner] {
             batch_norm_grad(*g, *x, *w, *m, *inv, *dx, *dw, *db, outer, channels, inner);
           };
         }},
        {"gather_rows", NDL_ROWS(gather_rows)},
        {"scatter_add_rows", NDL_ROWS(scatter_add_rows)},
        {"sgd_update",
         [](const py::tuple& args, Keep&) -> Step { return optimizer_step(args, false); }},
        {"adam_update",
         [](const py::tuple& args, Keep&) -> Step { return optimizer_step(args, true); }},
    };
    // The elementwise kernels, from oplist.h's lists.
#define NDL_ARITH_STEPS(op)                                                               \
  (*t)["ewise_" #op] = [](const py::tuple& args, Keep&) -> Step {                         \
    expect(args, 3, "ewise_" #op);                                                        \
    Array *a = handle(args[0]), *b = handle(args[1]), *out = handle(args[2]);             \
    return [a, b, out] { binary(Arith::op, *a, *b, *out); };                              \
  };                                                                                      \
  (*t)["scalar_" #op] = [](const py::tuple& args, Keep&) -> Step {                        \
    return scalar_step(Arith::op, "scalar_" #op, args);                                   \
  };
#define NDL_COMPARE_STEPS(op)                                                             \
  (*t)["ewise_" #op] = [](const py::tuple& args, Keep&) -> Step {                         \
    expect(args, 3, "ewise_" #op);                                                        \
    Array *a = handle(args[0]), *b = handle(args[1]), *out = handle(args[2]);             \
    return [a, b, out] { compare(Cmp::op, *a, *b, *out); };                               \
  };
#define NDL_SCALAR_COMPARE_STEPS(op)                                                      \
  (*t)["scalar_" #op] = [](const py::tuple& args, Keep&) -> Step {                        \
    return scalar_compare_step(Cmp::op, "scalar_" #op, args);                             \
  };
#define NDL_UNARY_STEPS(op)                                                               \
  (*t)["ewise_" #op] = [](const py::tuple& args, Keep&) -> Step {                         \
    expect(args, 2, "ewise_" #op);                                                        \
    Array *a = handle(args[0]), *out = handle(args[1]);                                   \
    return [a, out] { unary(Unary::op, *a, *out); };                                      \
  };
    NDL_ARITHMETIC(NDL_ARITH_STEPS)
    NDL_COMPARE(NDL_COMPARE_STEPS)
    NDL_COMPARE(NDL_SCALAR_COMPARE_STEPS)
    NDL_SCALAR_COMPARE(NDL_SCALAR_COMPARE_STEPS)
    NDL_UNARY(NDL_UNARY_STEPS)
#undef NDL_ARITH_STEPS
#undef NDL_COMPARE_STEPS
#undef NDL_SCALAR_COMPARE_STEPS
#undef NDL_UNARY_STEPS
    return t;
  }();
  return *table;
}

#undef NDL_VIEW_COPY
#undef NDL_PRODUCT
#undef NDL_REDUCE
#undef NDL_FOUR_HANDLES
#undef NDL_ROWS
#undef NDL_CONV

// One compiled item: the (name, args) pair it came from, and either its native step (with
// what the step points into) or the module's function to call with the GIL held.
struct Compiled {
  py::object item;
  Step step;
  Keep keep;
  py::object fn;  // set when the item has no native step
  py::tuple args;
};

// The module's own function `kernel`, for items without a native step; ValueError for a name
// that is no kernel of the module.
py::object python_kernel(const std::string& kernel) {
  static const std::unordered_set<std::string> refused = {"Array", "run_program"};
  const py::module_ mod = py::module_::import("needle_cpu._ext");
  if (kernel.empty() || kernel[0] == '_' || refused.count(kernel) != 0 ||
      !py::hasattr(mod, kernel.c_str()))
    fail("run_program: '" + kernel + "' is not a kernel of needle-cpu");
  py::object fn = mod.attr(kernel.c_str());
  if (!PyCallable_Check(fn.ptr()))
    fail("run_program: '" + kernel + "' is not a kernel of needle-cpu");
  return fn;
}

Compiled compile_item(const py::handle& item) {
  if (!PyTuple_Check(item.ptr()) || PyTuple_GET_SIZE(item.ptr()) != 2)
    fail("run_program takes (kernel name, args) pairs");
  const auto pair = py::reinterpret_borrow<py::tuple>(item);
  if (!PyUnicode_Check(pair[0].ptr()) || !PyTuple_Check(pair[1].ptr()))
    fail("run_program takes (kernel name, args) pairs: a str and a tuple");
  const std::string kernel = pair[0].cast<std::string>();
  const auto args = pair[1].cast<py::tuple>();
  Compiled c;
  c.item = py::reinterpret_borrow<py::object>(item);
  const auto& table = compilers();
  const auto found = table.find(kernel);
  if (found != table.end()) {
    try {
      c.step = found->second(args, c.keep);
      return c;
    } catch (const std::exception&) {
      // Arguments the native step does not take as given: the kernel decides, at its turn
      // (it raises its own exception, TypeError or ValueError, after the items before it).
      c.keep.clear();
    }
  }
  c.fn = python_kernel(kernel);
  c.args = args;
  return c;
}

struct Program {
  std::vector<Compiled> items;
};

struct Cached {
  py::object calls;  // the list (held: its reference count says when it is dropped)
  std::shared_ptr<Program> program;
};

// Made with the GIL held, never destroyed (its references would outlive the interpreter).
std::vector<Cached>& cache() {
  static auto* programs = new std::vector<Cached>;
  return *programs;
}

// The Program of `calls`, compiled or brought up to date; most recently used last.
std::shared_ptr<Program> program_for(const py::handle& calls) {
  if (!PyList_Check(calls.ptr()) && !PyTuple_Check(calls.ptr()))
    throw py::type_error("run_program takes a list of (kernel name, args) pairs");
  forget_dropped_programs();
  auto& programs = cache();
  auto it = std::find_if(programs.begin(), programs.end(),
                         [&](const Cached& c) { return c.calls.ptr() == calls.ptr(); });
  std::shared_ptr<Program> program;
  if (it != programs.end()) {
    program = it->program;
    std::rotate(it, it + 1, programs.end());
  } else {
    program = std::make_shared<Program>();
    if (programs.size() >= kPrograms) programs.erase(programs.begin());
    programs.push_back({py::reinterpret_borrow<py::object>(calls), program});
  }
  const auto items = py::reinterpret_steal<py::object>(PySequence_Fast(calls.ptr(), ""));
  if (!items) throw py::error_already_set();
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(items.ptr());
  PyObject** got = PySequence_Fast_ITEMS(items.ptr());
  bool changed = size_t(n) != program->items.size();
  for (Py_ssize_t i = 0; i < n && !changed; ++i) changed = got[i] != program->items[i].item.ptr();
  if (!changed) return program;
  // A Program that another thread is running is replaced, not changed under it.
  if (program.use_count() > 2) {
    program = std::make_shared<Program>(*program);
    programs.back().program = program;
  }
  try {
    program->items.resize(size_t(n));
    for (Py_ssize_t i = 0; i < n; ++i)
      if (got[i] != program->items[i].item.ptr()) program->items[i] = compile_item(got[i]);
  } catch (...) {
    programs.pop_back();  // half compiled: compile again next time
    throw;
  }
  return program;
}

}  // namespace

void forget_dropped_programs() {
  auto& programs = cache();
  programs.erase(std::remove_if(programs.begin(), programs.end(),
                                [](const Cached& c) { return Py_REFCNT(c.calls.ptr()) == 1; }),
                 programs.end());
}

void run_program(const py::object& calls) {
  const std::shared_ptr<Program> program = program_for(calls);
  const std::vector<Compiled>& items = program->items;
  for (size_t i = 0; i < items.size();) {
    if (!items[i].step) {  // the module's function, with the GIL
      items[i].fn(*items[i].args);
      ++i;
      continue;
    }
    MaybeRelease gil(kParallel);  // a stretch of native steps without the GIL
    for (; i < items.size() && items[i].step; ++i) items[i].step();
  }
}

}  // namespace needle_cpu
