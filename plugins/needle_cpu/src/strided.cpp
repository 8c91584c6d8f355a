// Strided copies: compact, ewise_setitem, scalar_setitem and to_numpy are one engine
// (strided_copy); from_numpy and fill are plain copies and fills of whole buffers.

#include <algorithm>
#include <cstring>

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
    if (!e.matches(PyExc_MemoryError) || cache_info().bytes == 0) throw;
  }
  empty_cache();
  return make();
}

// dst[view] = src[view] for two strided views of one shape (compact, setitem, fill).
void strided_copy(const float* src, float* dst, const Shape& shape0, const Shape& ss0,
                  const Shape& ds0) {
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

  // A transpose: one side is contiguous along `last`, the other along another dim `k`.
  int k = -1;
  for (int i = 0; i < last && k < 0; ++i)
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
        K.copy2d(src + so + r0 * ss[k], dst + dof + r0 * ds[k], std::min(R, shape[k] - r0),
                 shape[last], ss[k], ss[last], ds[k], ds[last]);
      }
    });
    return;
  }

  // Otherwise: an odometer over the outer dims, a tight loop over the last one.
  const int64_t inner = shape[last], sl = ss[last], dl = ds[last];
  auto row = [sl, dl](const float* s, float* d, int64_t len) {
    if (sl == 1 && dl == 1) std::memcpy(d, s, size_t(len) * sizeof(float));
    else if (sl == 0 && dl == 1) std::fill_n(d, len, *s);
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

// strided_copy's odometer holds at most 64 indices.
void check_dims(const Shape& shape) {
  if (shape.size() > 64) fail("views of more than 64 dimensions are not supported");
}

}  // namespace

void compact(const Array& a, Array& out, const Shape& shape, const Shape& strides,
             int64_t offset) {
  check_dims(shape);
  int64_t n = check_view(a.size(), shape, strides, offset);
  if (n != out.size())
    fail("compact: the view " + str(shape) + " has " + std::to_string(n) +
         " elements, out has " + std::to_string(out.size()));
  if (n == 0) return;
  const float* src = a.data() + offset;
  float* dst = out.data();
  MaybeRelease gil(n);
  strided_copy(src, dst, shape, strides, compact_strides(shape));
}

void ewise_setitem(const Array& a, Array& out, const Shape& shape, const Shape& strides,
                   int64_t offset) {
  check_dims(shape);
  int64_t n = check_view(out.size(), shape, strides, offset);
  if (n != a.size())
    fail("ewise_setitem: the view " + str(shape) + " has " + std::to_string(n) +
         " elements, a has " + std::to_string(a.size()));
  if (n == 0) return;
  const float* src = a.data();
  float* dst = out.data() + offset;
  MaybeRelease gil(n);
  strided_copy(src, dst, shape, compact_strides(shape), strides);
}

void scalar_setitem(int64_t size, float val, Array& out, const Shape& shape,
                    const Shape& strides, int64_t offset) {
  check_dims(shape);
  int64_t n = check_view(out.size(), shape, strides, offset);
  if (n != size)
    fail("scalar_setitem: size " + std::to_string(size) + " does not match the view's " +
         std::to_string(n) + " elements");
  if (n == 0) return;
  float* dst = out.data() + offset;
  MaybeRelease gil(n);
  strided_copy(&val, dst, shape, Shape(shape.size(), 0), strides);
}

py::array_t<float> to_numpy(const Array& a, const Shape& shape, const Shape& strides,
                            int64_t offset) {
  check_dims(shape);
  int64_t n = check_view(a.size(), shape, strides, offset);
  // A new C-contiguous array, never a view of `a`.
  auto result = with_cache_released_on_oom(
      [&] { return py::array_t<float>(std::vector<py::ssize_t>(shape.begin(), shape.end())); });
  if (n == 0) return result;
  const float* src = a.data() + offset;
  float* dst = result.mutable_data();
  {
    MaybeRelease gil(n);
    strided_copy(src, dst, shape, strides, compact_strides(shape));
  }
  return result;
}

void from_numpy(const py::object& data, Array& out) {
  // Converted here rather than by pybind11's caster, which reports any failure to convert
  // (numpy's MemoryError included) as a TypeError about the arguments.
  using Floats = py::array_t<float, py::array::c_style | py::array::forcecast>;
  const auto arr = with_cache_released_on_oom([&] { return Floats(data); });
  if (arr.size() != out.size())
    fail("from_numpy: the array has " + std::to_string(arr.size()) + " elements, out has " +
         std::to_string(out.size()));
  if (out.size() == 0) return;
  const float* src = arr.data();
  float* dst = out.data();
  MaybeRelease gil(out.size());
  parallel_for(out.size(), 1, [&](int64_t b, int64_t e) {
    std::memcpy(dst + b, src + b, size_t(e - b) * sizeof(float));
  });
}

void fill(Array& out, float val) {
  float* dst = out.data();
  MaybeRelease gil(out.size());
  parallel_for(out.size(), 1, [&](int64_t b, int64_t e) { std::fill(dst + b, dst + e, val); });
}

}  // namespace needle_cpu
