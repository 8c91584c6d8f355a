// The functions of the backend contract (needle.contract), one source file per kind of op;
// module.cpp binds them under the contract's names. Sizes and views are checked first.

#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <initializer_list>

#include "array.h"

namespace needle_cpu {

// strided.cpp: copies between strided views, and whole buffers from numpy or a value.
void compact(const Array& a, Array& out, const Shape& shape, const Shape& strides,
             int64_t offset);
void ewise_setitem(const Array& a, Array& out, const Shape& shape, const Shape& strides,
                   int64_t offset);
void scalar_setitem(int64_t size, float val, Array& out, const Shape& shape,
                    const Shape& strides, int64_t offset);
pybind11::array_t<float> to_numpy(const Array& a, const Shape& shape, const Shape& strides,
                            int64_t offset);
void from_numpy(const pybind11::object& data, Array& out);  // data: anything numpy converts
void fill(Array& out, float val);

// elementwise.cpp: elementwise ops and reductions. Op numbers the kernels' `op` argument.
enum Op { ADD, MUL, DIV, MAXIMUM, EQ, GE, SQUARE };
void binary(int op, const Array& a, const Array& b, Array& out);
void scalar(int op, const Array& a, float val, Array& out);
void scalar_power(const Array& a, float val, Array& out);
void ewise_power(const Array& a, const Array& b, Array& out);
void unary(int op, const Array& a, Array& out);  // 0 log, 1 exp, 2 tanh
template <bool Sum>  // reduce_sum (true), reduce_max (false)
void reduce(const Array& a, Array& out, int64_t reduce_size);

// gemm.cpp: matrix products through OpenBLAS.
void check_blas_dims(std::initializer_list<int64_t> dims);
void sgemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t p);
void matmul(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p);
void bmm(const Array& a, const Array& b, Array& out, int64_t batch, int64_t m, int64_t n,
         int64_t p);

// conv2d.cpp
void conv2d(const Array& a, const Array& wt, Array& out, int64_t n, int64_t h, int64_t w,
            int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t padding);

}  // namespace needle_cpu
