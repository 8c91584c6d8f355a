// The functions of the backend contract (needle.contract), one source file per kind of op;
// module.cpp binds them under the contract's names. Sizes, dtypes and views are checked first.

#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "array.h"
#include "oplist.h"

namespace needle_cpu {

// A Python scalar as T, as the contract passes it: float for float handles, int for integer
// ones (TypeError for a float, OverflowError beyond the dtype), truth for bool.
template <class T>
T scalar_of(pybind11::handle val) {
  if constexpr (std::is_floating_point_v<T>) {
    const double d = PyFloat_AsDouble(val.ptr());
    if (d == -1.0 && PyErr_Occurred()) throw pybind11::error_already_set();
    return T(d);  // to float32: rounded, as numpy's float32(val)
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    const int r = PyObject_IsTrue(val.ptr());
    if (r < 0) throw pybind11::error_already_set();
    return uint8_t(r);
  } else {
    const long long v = PyLong_AsLongLong(val.ptr());  // ints and __index__, never floats
    if (v == -1 && PyErr_Occurred()) throw pybind11::error_already_set();
    if constexpr (sizeof(T) == 4) {
      if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%lld does not fit in int32", v);
        throw pybind11::error_already_set();
      }
    }
    return T(v);
  }
}

// f(T()) for the numeric dtypes; a bool handle is a ValueError naming the kernel.
template <class F>
void visit_number(DType d, const char* kernel, F&& f) {
  if (d == DType::bool_)
    fail(std::string(kernel) + " takes float32, float64, int32 or int64 handles, not bool");
  visit(d, [&](auto t) {
    if constexpr (!std::is_same_v<decltype(t), uint8_t>) f(t);
  });
}

// numpy's dtype for d, made once (py::dtype from a name costs a lookup per call).
const pybind11::dtype& numpy_dtype(DType d);

// strided.cpp: copies between strided views, and whole buffers from numpy or a value.
void compact(const Array& a, Array& out, const Shape& shape, const Shape& strides,
             int64_t offset);
void ewise_setitem(const Array& a, Array& out, const Shape& shape, const Shape& strides,
                   int64_t offset);
void scalar_setitem(int64_t size, pybind11::handle val, Array& out, const Shape& shape,
                    const Shape& strides, int64_t offset);
pybind11::array to_numpy(const Array& a, const Shape& shape, const Shape& strides,
                         int64_t offset);
void from_numpy(const pybind11::object& data, Array& out);  // data: out's dtype and size
void fill(Array& out, pybind11::handle val);
// out[offsets[i] : +arrays[i].size] = arrays[i], and its inverse, scaled:
// outs[i] = a[offsets[i] : ...] * scale (a copy of the bits when scale is 1).
void pack(const pybind11::sequence& arrays, Array& out, const pybind11::sequence& offsets);
void unpack(const Array& a, const pybind11::sequence& outs, const pybind11::sequence& offsets,
            double scale);
pybind11::tuple slices(Array& a, const pybind11::sequence& offsets,
                       const pybind11::sequence& sizes);
void check_dims(const Shape& shape);  // at most 64 dimensions (the copy engine's odometer)

// elementwise.cpp: elementwise ops, reductions and casts. `op` numbers oplist.h's lists.
void binary(Arith op, const Array& a, const Array& b, Array& out);
void scalar(Arith op, const Array& a, pybind11::handle val, Array& out);
void compare(Cmp op, const Array& a, const Array& b, Array& out);
void scalar_compare(Cmp op, const Array& a, pybind11::handle val, Array& out);
void unary(Unary op, const Array& a, Array& out);
template <bool Sum>  // reduce_sum (true), reduce_max (false)
void reduce(const Array& a, Array& out, int64_t reduce_size);
void cast(const Array& a, Array& out);

// gemm.cpp: matrix products (OpenBLAS for float32 and float64, a blocked loop for integers).
void check_blas_dims(std::initializer_list<int64_t> dims);
// c (m, p) = a (m, n) @ b (n, p), compact, threaded by our pool; ta / tb: a is (n, m) and b
// is (p, n), read transposed.
template <class T>
void gemm(const T* a, const T* b, T* c, int64_t m, int64_t n, int64_t p, bool ta = false,
          bool tb = false);
void matmul(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p);
void matmul_t(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p,
              bool trans_a, bool trans_b);
void bmm(const Array& a, const Array& b, Array& out, int64_t batch, int64_t m, int64_t n,
         int64_t p);
constexpr int64_t kTile = 8;  // __tile_size__ of matmul_tiled (the course's TILE)
void matmul_tiled(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p);

// conv2d.cpp
void conv2d(const Array& a, const Array& wt, Array& out, int64_t n, int64_t h, int64_t w,
            int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t padding);
void conv2d_grad_weight(const Array& a, const Array& grad, Array& out, int64_t n, int64_t h,
                        int64_t w, int64_t cin, int64_t cout, int64_t k, int64_t stride,
                        int64_t padding);
void conv2d_grad_input(const Array& grad, const Array& weight, Array& out, int64_t n, int64_t h,
                       int64_t w, int64_t cin, int64_t cout, int64_t k, int64_t stride,
                       int64_t padding);

// dlpack.cpp: the buffer protocol of Array, and memory shared with DLPack producers/consumers.
void enable_buffer_protocol(pybind11::handle array_type);
pybind11::array to_dlpack(Array& a, const Shape& shape, const Shape& strides, int64_t offset);
pybind11::tuple from_dlpack(const pybind11::object& obj);

// fused.cpp: the optional capabilities that do in one call what core composes otherwise.
void broadcast_rows(const std::string& op, const Array& a, const Array& b, Array& out,
                    int64_t width);
void softmax_cross_entropy(const Array& logits, const Array& labels, Array& losses,
                           Array& probs, int64_t n, int64_t k);
void softmax_cross_entropy_grad(const Array& probs, const Array& labels, const Array& g,
                                Array& out, int64_t n, int64_t k);
void gather_rows(const Array& a, const Array& indices, Array& out, int64_t count, int64_t width);
void scatter_add_rows(const Array& a, const Array& indices, Array& out, int64_t count,
                      int64_t width);
// norm.cpp: batch normalization's forward and gradient over compact (outer, channels, inner).
void batch_norm(const Array& x, const Array& weight, const Array& bias, Array& out, Array& mean,
                Array& invstd, Array& running_mean, Array& running_var, int64_t outer,
                int64_t channels, int64_t inner, double eps, double momentum);
void batch_norm_grad(const Array& g, const Array& x, const Array& weight, const Array& mean,
                     const Array& invstd, Array& dx, Array& dweight, Array& dbias, int64_t outer,
                     int64_t channels, int64_t inner);
// The optimizers' handles: params, grads and their state, one list each, checked by
// optimizer_group (equal lengths; per parameter one float dtype and size).
using Group = std::vector<std::vector<Array*>>;
Group optimizer_group(std::initializer_list<pybind11::sequence> lists, const char* kernel);
void sgd_update_group(const Group& g, double b, double one_minus_b, double neg_lr,
                      double weight_decay);
void adam_update_group(const Group& g, double b1, double one_minus_b1, double b2,
                       double one_minus_b2, double weight_decay, double step, double eps_hat);
void sgd_update(const pybind11::sequence& params, const pybind11::sequence& grads,
                const pybind11::sequence& momenta, double b, double one_minus_b, double neg_lr,
                double weight_decay);
void adam_update(const pybind11::sequence& params, const pybind11::sequence& grads,
                 const pybind11::sequence& firsts, const pybind11::sequence& seconds, double b1,
                 double one_minus_b1, double b2, double one_minus_b2, double weight_decay,
                 double step, double eps_hat);

// program.cpp: run_program (a recorded list of kernel calls, compiled once and run without
// the GIL) and the cache of compiled programs (forget_dropped_programs: those whose list
// nothing else holds any more).
void run_program(const pybind11::object& calls);
void forget_dropped_programs();

}  // namespace needle_cpu
