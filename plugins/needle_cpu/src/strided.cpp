// Strided copies: compact, ewise_setitem, scalar_setitem and to_numpy are one engine
// (strided_copy, over the bits of 1-, 4- or 8-byte elements: a copy needs no dtype);
// from_numpy and fill are plain copies and fills of whole buffers; pack and unpack copy a
// list of whole buffers into, or out of, ranges of one flat buffer (gradient buckets), and
// slices hands out ranges of one as buffers of their own, without copying.

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "isa.h"
#include "ops.h"
#include "pool.h"

namespace needle_cpu {

namespace py = pybind11;

namespace {

// make() (a numpy array), once more after handing the buffer cache back to the system if it
// runs out of memory: cached buffers must not be what stands between a caller and its array.
template <class F>
auto with_cache_released_on_oom(F make) {
  try {
    return make();
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_MemoryError) || memory_stats().cached_bytes == 0) throw;
  }
  empty_cache();
  return make();
}

// dst[view] = src[view] for two strided views of one shape (compact, setitem, fill).
template <class U>
void strided_copy(const U* src, U* dst, const Shape& shape0, const Shape& ss0, const Shape& ds0) {
  // Drop unit dims, then merge neighbours that are contiguous in both views.
  Shape shape, ss, ds;
  for (size_t i = 0; i < shape0.size(); ++i) {
    if (shape0[i] == 1) continue;
    if (!shape.empty() && ss.back() == ss0[i] * shape0[i] && ds.back() == ds0[i] * shape0[i]) {
      shape.back() *= shape0[i];
      ss.back() = ss0[i];
      ds.back() = ds0[i];
      continue;
    }
    shape.push_back(shape0[i]), ss.push_back(ss0[i]), ds.push_back(ds0[i]);
  }
  const int nd = int(shape.size());
  if (nd == 0) return void(*dst = *src);
  const int last = nd - 1;
  int64_t total = 1;
  for (int64_t d : shape) total *= d;

  // A transpose: one side is contiguous along `last`, the other along another dim `k`. (Not a
  // broadcast along `last`, stride 0: its rows are fills, 6x faster than a tiled transpose.)
  int k = -1;
  for (int i = 0; i < last && k < 0 && ss[last] != 0 && ds[last] != 0; ++i)
    if ((ss[i] == 1 && ds[last] == 1 && ss[last] != 1) ||
        (ds[i] == 1 && ss[last] == 1 && ds[last] != 1))
      k = i;
  if (k >= 0 && shape[k] >= 16 && shape[last] >= 16) {
    Shape oshape, oss, ods;  // the other dims
    for (int i = 0; i < last; ++i)
      if (i != k) oshape.push_back(shape[i]), oss.push_back(ss[i]), ods.push_back(ds[i]);
    constexpr int64_t R = 64;  // rows of dim k per work item
    const int64_t tiles = (shape[k] + R - 1) / R, items = total / (shape[k] * shape[last]) * tiles;
    parallel_for(items, R * shape[last], [&](int64_t b, int64_t e) {
      for (int64_t it = b; it < e; ++it) {
        int64_t o = it / tiles, r0 = it % tiles * R, so = 0, dof = 0;
        for (int i = int(oshape.size()) - 1; i >= 0; --i) {
          so += o % oshape[i] * oss[i], dof += o % oshape[i] * ods[i];
          o /= oshape[i];
        }
        K.copy2d<U>()(src + so + r0 * ss[k], dst + dof + r0 * ds[k], std::min(R, shape[k] - r0),
                 shape[last], ss[k], ss[last], ds[k], ds[last]);
      }
    });
    return;
  }

  // A transpose whose last dim is short (NCHW -> NHWC of 3 channels, say): the dim that runs
  // contiguous on the other side becomes the inner loop, so rows are long.
  if (k >= 0 && shape[last] < 16 && shape[k] >= 16) {
    for (Shape* v : {&shape, &ss, &ds}) std::rotate(v->begin() + k, v->begin() + k + 1, v->end());
  }
  // Otherwise: an odometer over the outer dims, a tight loop over the last one.
  const int64_t inner = shape[last], sl = ss[last], dl = ds[last];
  auto row = [sl, dl](const U* s, U* d, int64_t len) {
    if (sl == 1 && dl == 1) std::memcpy(d, s, size_t(len) * sizeof(U));
    else if (sl == 0 && dl == 1) std::fill_n(d, len, *s);
    else if (sl == -1 && dl == 1)  // a flip: a constant stride vectorizes (with shuffles)
      for (int64_t j = 0; j < len; ++j) d[j] = s[-j];
    else if (dl == 1)
      for (int64_t j = 0; j < len; ++j) d[j] = s[j * sl];
    else
      for (int64_t j = 0; j < len; ++j) d[j * dl] = s[j * sl];
  };
  if (nd == 1) {
    parallel_for(inner, 1, [&](int64_t b, int64_t e) { row(src + b * sl, dst + b * dl, e - b); });
    return;
  }
  parallel_for(total / inner, inner, [&](int64_t b, int64_t e) {
    int64_t idx[64] = {}, so = 0, dof = 0, o = b;
    for (int i = last - 1; i >= 0; --i) {
      idx[i] = o % shape[i], o /= shape[i];
      so += idx[i] * ss[i], dof += idx[i] * ds[i];
    }
    for (int64_t it = b; it < e; ++it) {
      row(src + so, dst + dof, inner);
      for (int i = last - 1; i >= 0; --i) {  // next index, last outer dim fastest
        so += ss[i], dof += ds[i];
        if (++idx[i] < shape[i]) break;
        so -= ss[i] * shape[i], dof -= ds[i] * shape[i], idx[i] = 0;
      }
    }
  });
}

Shape compact_strides(const Shape& shape) {
  Shape s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) s[i] = acc, acc *= shape[i];
  return s;
}

// Bits of `out`'s dtype at element `offset` of `a`'s buffer, as the copy engine moves them.
template <class U>
const U* bits(const Array& a, int64_t offset) {
  return static_cast<const U*>(a.raw()) + offset;
}
template <class U>
U* bits(Array& a, int64_t offset) {
  return static_cast<U*>(a.raw()) + offset;
}

}  // namespace

const py::dtype& numpy_dtype(DType d) {
  static const auto* table = [] {  // made with the GIL held, and never destroyed
    auto* t = new std::vector<py::dtype>;
    for (int i = 0; i < kDTypes; ++i) t->push_back(py::dtype(name(DType(i))));
    return t;
  }();
  return (*table)[int(d)];
}

// strided_copy's odometer holds at most 64 indices.
void check_dims(const Shape& shape) {
  if (shape.size() > 64) fail("views of more than 64 dimensions are not supported");
}

void compact(const Array& a, Array& out, const Shape& shape, const Shape& strides,
             int64_t offset) {
  check_dims(shape);
  int64_t n = check_view(a.size(), shape, strides, offset);
  if (n != out.size())
    fail("compact: the view " + str(shape) + " has " + std::to_string(n) +
         " elements, out has " + std::to_string(out.size()));
  if (a.dtype() != out.dtype())
    fail(std::string("compact: dtypes differ: ") + name(a.dtype()) + ", out " + name(out.dtype()));
  if (n == 0) return;
  visit_bits(a.dtype(), [&](auto u) {
    using U = decltype(u);
    const U* src = bits<U>(a, offset);
    U* dst = bits<U>(out, 0);
    MaybeRelease gil(n);
    strided_copy(src, dst, shape, strides, compact_strides(shape));
  });
}

void ewise_setitem(const Array& a, Array& out, const Shape& shape, const Shape& strides,
                   int64_t offset) {
  check_dims(shape);
  int64_t n = check_view(out.size(), shape, strides, offset);
  if (n != a.size())
    fail("ewise_setitem: the view " + str(shape) + " has " + std::to_string(n) +
         " elements, a has " + std::to_string(a.size()));
  if (a.dtype() != out.dtype())
    fail(std::string("ewise_setitem: dtypes differ: ") + name(a.dtype()) + ", out " +
         name(out.dtype()));
  if (n == 0) return;
  visit_bits(a.dtype(), [&](auto u) {
    using U = decltype(u);
    const U* src = bits<U>(a, 0);
    U* dst = bits<U>(out, offset);
    MaybeRelease gil(n);
    strided_copy(src, dst, shape, compact_strides(shape), strides);
  });
}

void scalar_setitem(int64_t size, py::handle val, Array& out, const Shape& shape,
                    const Shape& strides, int64_t offset) {
  check_dims(shape);
  int64_t n = check_view(out.size(), shape, strides, offset);
  if (n != size)
    fail("scalar_setitem: size " + std::to_string(size) + " does not match the view's " +
         std::to_string(n) + " elements");
  visit(out.dtype(), [&](auto t) {
    using T = decltype(t);
    const T v = scalar_of<T>(val);
    visit_bits(out.dtype(), [&](auto u) {
      using U = decltype(u);
      if constexpr (sizeof(U) == sizeof(T)) {
        U b;
        std::memcpy(&b, &v, sizeof b);
        if (n == 0) return;
        U* dst = bits<U>(out, offset);
        MaybeRelease gil(n);
        strided_copy(&b, dst, shape, Shape(shape.size(), 0), strides);
      }
    });
  });
}

py::array to_numpy(const Array& a, const Shape& shape, const Shape& strides, int64_t offset) {
  check_dims(shape);
  int64_t n = check_view(a.size(), shape, strides, offset);
  // A new C-contiguous array, never a view of `a`.
  auto result = with_cache_released_on_oom([&] {
    return py::array(numpy_dtype(a.dtype()),
                     std::vector<py::ssize_t>(shape.begin(), shape.end()));
  });
  if (n == 0) return result;
  visit_bits(a.dtype(), [&](auto u) {
    using U = decltype(u);
    const U* src = bits<U>(a, offset);
    U* dst = static_cast<U*>(result.mutable_data());
    MaybeRelease gil(n);
    strided_copy(src, dst, shape, strides, compact_strides(shape));
  });
  return result;
}

void from_numpy(const py::object& data, Array& out) {
  // The data must have out's dtype already: converting is core's choice (NDArray.from_numpy),
  // not a kernel's. Anything that is not a numpy array goes through numpy.asarray first.
  py::array arr = py::isinstance<py::array>(data)
                      ? py::reinterpret_borrow<py::array>(data)
                      : py::module_::import("numpy").attr("asarray")(data).cast<py::array>();
  if (!arr.dtype().equal(numpy_dtype(out.dtype())))
    fail("from_numpy: the array holds " + py::str(arr.dtype()).cast<std::string>() +
         ", out holds " + name(out.dtype()));
  if (arr.size() != out.size())
    fail("from_numpy: the array has " + std::to_string(arr.size()) + " elements, out has " +
         std::to_string(out.size()));
  if (out.size() == 0) return;
  if (!(arr.flags() & py::array::c_style))  // a contiguous copy (numpy's errors, MemoryError too)
    arr = with_cache_released_on_oom([&] {
      return py::module_::import("numpy").attr("ascontiguousarray")(arr).cast<py::array>();
    });
  const auto* src = static_cast<const char*>(arr.data());
  char* dst = static_cast<char*>(out.raw());
  const int64_t item = int64_t(itemsize(out.dtype()));
  MaybeRelease gil(out.size());
  parallel_for(out.size(), 1, [&](int64_t b, int64_t e) {
    std::memcpy(dst + b * item, src + b * item, size_t((e - b) * item));
  });
}

void fill(Array& out, py::handle val) {
  visit(out.dtype(), [&](auto t) {
    using T = decltype(t);
    const T v = scalar_of<T>(val);
    T* dst = out.data<T>();
    MaybeRelease gil(out.size());
    parallel_for(out.size(), 1, [&](int64_t b, int64_t e) { std::fill(dst + b, dst + e, v); });
  });
}

namespace {

// The handles of a pack/unpack list, checked against the flat buffer before any copy: one
// dtype, as many offsets as handles, every range inside the flat buffer. Returns the byte
// ranges to copy as (handle, byte offset in the flat buffer).
std::vector<std::pair<Array*, size_t>> flat_ranges(const py::sequence& arrays, const Array& flat,
                                                   const py::sequence& offsets,
                                                   const char* kernel) {
  const size_t n = py::len(arrays);
  if (py::len(offsets) != n)
    fail(std::string(kernel) + ": " + std::to_string(n) + " buffers but " +
         std::to_string(py::len(offsets)) + " offsets");
  const size_t item = itemsize(flat.dtype());
  std::vector<std::pair<Array*, size_t>> ranges;
  ranges.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    Array* a = &arrays[i].cast<Array&>();
    const int64_t start = offsets[i].cast<int64_t>();
    if (a->dtype() != flat.dtype())
      fail(std::string(kernel) + ": buffer " + std::to_string(i) + " is " + name(a->dtype()) +
           ", the flat buffer " + name(flat.dtype()));
    if (start < 0 || start > flat.size() || a->size() > flat.size() - start)
      fail(std::string(kernel) + ": buffer " + std::to_string(i) + " (" +
           std::to_string(a->size()) + " elements) at offset " + std::to_string(start) +
           " overruns the flat buffer of " + std::to_string(flat.size()));
    ranges.emplace_back(a, size_t(start) * item);
  }
  return ranges;
}

int64_t total_size(const std::vector<std::pair<Array*, size_t>>& ranges) {
  int64_t n = 0;
  for (const auto& r : ranges) n += r.first->size();
  return n;
}

}  // namespace

void pack(const py::sequence& arrays, Array& out, const py::sequence& offsets) {
  const auto ranges = flat_ranges(arrays, out, offsets, "pack");
  const size_t item = itemsize(out.dtype());
  char* dst = static_cast<char*>(out.raw());
  MaybeRelease gil(total_size(ranges));
  for (const auto& [a, at] : ranges)
    if (a->size()) std::memcpy(dst + at, a->raw(), size_t(a->size()) * item);
}

void unpack(const Array& a, const py::sequence& outs, const py::sequence& offsets,
            double scale) {
  const auto ranges = flat_ranges(outs, a, offsets, "unpack");
  const size_t item = itemsize(a.dtype());
  const char* src = static_cast<const char*>(a.raw());
  if (scale == 1.0) {  // a copy of the bits, any dtype
    MaybeRelease gil(total_size(ranges));
    for (const auto& [out, at] : ranges)
      if (out->size()) std::memcpy(out->raw(), src + at, size_t(out->size()) * item);
    return;
  }
  visit(a.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_floating_point_v<T>) {
      fail(std::string("unpack scales float buffers only, not ") + name(a.dtype()) +
           " (scale " + std::to_string(scale) + ")");
    } else {
      const T factor = T(scale);  // each product rounded to T, as scalar_mul's
      MaybeRelease gil(total_size(ranges));
      for (const auto& [out, at] : ranges) {
        const T* x = reinterpret_cast<const T*>(src + at);
        T* z = out->template data<T>();
        for (int64_t k = 0, n = out->size(); k < n; ++k) z[k] = x[k] * factor;
      }
    }
  });
}

py::tuple slices(Array& a, const py::sequence& offsets, const py::sequence& sizes) {
  const size_t n = py::len(offsets);
  if (py::len(sizes) != n)
    fail("slices: " + std::to_string(n) + " offsets but " + std::to_string(py::len(sizes)) +
         " sizes");
  std::vector<std::pair<int64_t, int64_t>> ranges(n);  // (offset, size), all checked first
  for (size_t i = 0; i < n; ++i) {
    const int64_t start = offsets[i].cast<int64_t>(), size = sizes[i].cast<int64_t>();
    if (start < 0 || size < 0 || start > a.size() || size > a.size() - start)
      fail("slices: range " + std::to_string(i) + " (" + std::to_string(size) +
           " elements at offset " + std::to_string(start) + ") is outside a buffer of " +
           std::to_string(a.size()));
    ranges[i] = {start, size};
  }
  char* base = static_cast<char*>(a.raw());  // raises for a freed Array
  const size_t item = itemsize(a.dtype());
  const std::shared_ptr<Storage> storage = a.share();  // each slice holds the memory
  py::tuple out(n);
  for (size_t i = 0; i < n; ++i) {
    const auto [start, size] = ranges[i];
    out[i] = py::cast(std::make_unique<Array>(storage, size, a.dtype(), base + start * item));
  }
  return out;
}

}  // namespace needle_cpu
