// The optional capabilities of contract v2 that do in one call what core would otherwise
// compose from many: gather_rows / scatter_add_rows (rows picked by an int64 index buffer on
// the device) and the optimizer updates sgd_update / adam_update (every parameter of one
// dtype in one call, in place). Arguments are checked before any memory is touched.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "isa.h"
#include "ops.h"
#include "pool.h"

namespace needle_cpu {

namespace py = pybind11;

namespace {

// The int64 indices of a row kernel, checked: count of them, each in [0, rows).
const int64_t* row_indices(const Array& indices, int64_t count, int64_t rows, const char* kernel) {
  want(indices, DType::int64, kernel);
  if (count < 0 || indices.size() != count)
    fail(std::string(kernel) + ": " + std::to_string(indices.size()) + " indices for count " +
         std::to_string(count));
  const int64_t* idx = indices.data<int64_t>();
  for (int64_t j = 0; j < count; ++j)
    if (idx[j] < 0 || idx[j] >= rows)  // a C++ exception: no Python call (run_program)
      throw py::index_error(std::string(kernel) + ": index " + std::to_string(idx[j]) +
                            " is out of range for " + std::to_string(rows) + " rows");
  return idx;
}

int64_t rows_of(const Array& table, int64_t width, const char* kernel) {
  if (width <= 0 || table.size() % width != 0)
    fail(std::string(kernel) + ": a buffer of " + std::to_string(table.size()) +
         " elements is not rows of " + std::to_string(width));
  return table.size() / width;
}

}  // namespace

// The handles of one parameter group, checked: equal sizes within each parameter, one float
// dtype for all.
Group optimizer_group(std::initializer_list<py::sequence> lists, const char* kernel) {
  Group out;
  size_t n = 0;
  for (const py::sequence& list : lists) {
    std::vector<Array*> handles;
    for (py::handle h : list) handles.push_back(&h.cast<Array&>());
    if (!out.empty() && handles.size() != n)
      fail(std::string(kernel) + ": the lists of handles differ in length");
    n = handles.size();
    out.push_back(std::move(handles));
  }
  for (size_t i = 0; i < n; ++i) {
    const Array& w = *out[0][i];
    if (w.dtype() != DType::float32 && w.dtype() != DType::float64)
      fail(std::string(kernel) + " updates float32 or float64 parameters, not " + name(w.dtype()));
    for (const auto& list : out)
      if (list[i]->size() != w.size() || list[i]->dtype() != w.dtype())
        fail(std::string(kernel) + ": parameter " + std::to_string(i) +
             " and its gradient or state differ in size or dtype");
  }
  return out;
}

void broadcast_rows(const std::string& op, const Array& a, const Array& b, Array& out,
                    int64_t width) {
  const char* kernel = "broadcast_rows";
  same(a, out);
  if (b.dtype() != a.dtype()) differ(a, b, out);
  if (width <= 0 || b.size() != width || a.size() % width != 0)
    fail(std::string(kernel) + ": " + std::to_string(a.size()) + " elements are not rows of " +
         "b's " + std::to_string(b.size()));
  const int which = op == "add" ? 0 : op == "mul" ? 1 : op == "div" ? 2 : op == "maximum" ? 3 : -1;
  if (which < 0) fail(std::string(kernel) + ": op must be add, mul, div or maximum, not " + op);
  visit_number(a.dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_floating_point_v<T>)
      if (which == 2) fail("broadcast_rows divides float handles (core casts integers first)");
    const T *x = a.data<T>(), *y = b.data<T>();
    T* z = out.data<T>();
    const int64_t rows = a.size() / width;
    MaybeRelease gil(a.size());
    parallel_for(rows, width, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const T* xi = x + i * width;
        T* zi = z + i * width;
        switch (which) {  // the same operations as ewise_<op>, so the same bits
          case 0: for (int64_t j = 0; j < width; ++j) zi[j] = xi[j] + y[j]; break;
          case 1: for (int64_t j = 0; j < width; ++j) zi[j] = xi[j] * y[j]; break;
          case 2: for (int64_t j = 0; j < width; ++j) zi[j] = xi[j] / y[j]; break;
          default:
            for (int64_t j = 0; j < width; ++j) {
              const T p = xi[j], q = y[j];
              zi[j] = (p > q || p != p) ? p : q;  // as ewise_maximum: NaN wins, a tie gives q
            }
        }
      }
    });
  });
}

void softmax_cross_entropy(const Array& logits, const Array& labels, Array& losses,
                           Array& probs, int64_t n, int64_t k) {
  const char* kernel = "softmax_cross_entropy";
  same(logits, probs);
  if (n < 0 || k < 0 || logits.size() != checked_mul(n, k) || losses.size() != n ||
      losses.dtype() != logits.dtype())
    fail(std::string(kernel) + ": buffers do not hold (n, k) logits and (n,) losses");
  const int64_t* idx = row_indices(labels, n, k, kernel);
  if (n == 0 || k == 0) return;
  visit(logits.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_floating_point_v<T>) {
      fail(std::string(kernel) + " takes float32 or float64 logits, not " + name(logits.dtype()));
    } else {
      const T* x = logits.data<T>();
      T *p = probs.data<T>(), *loss = losses.data<T>();
      const T big = std::numeric_limits<T>::max();
      MaybeRelease gil(logits.size() * 4);
      parallel_for(n, k * 4, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) {
          const T* row = x + i * k;
          T* pr = p + i * k;
          // Three passes through the SIMD kernels of this CPU (kernels.h): the max (NaN wins),
          // exp(row - top) and its sum together (a subtraction is the addition of -top,
          // exactly), the division.
          const auto& kt = K.typed<T>();
          T top = kt.max_block(row, k);
          if (top == top) top = std::min(std::max(top, -big), big);  // finite: -inf rows, +inf
          const T sum = kt.exp_shift_sum(row, -top, pr, k);
          kt.scalar(int(Arith::div), pr, sum, pr, k);
          loss[i] = T(std::log(sum)) + top - row[idx[i]];
        }
      });
    }
  });
}

void softmax_cross_entropy_grad(const Array& probs, const Array& labels, const Array& g,
                                Array& out, int64_t n, int64_t k) {
  const char* kernel = "softmax_cross_entropy_grad";
  same(probs, out);
  if (n < 0 || k < 0 || probs.size() != checked_mul(n, k) || g.size() != n ||
      g.dtype() != probs.dtype())
    fail(std::string(kernel) + ": buffers do not hold (n, k) probs and (n,) g");
  const int64_t* idx = row_indices(labels, n, k, kernel);
  if (n == 0 || k == 0) return;
  visit(probs.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_floating_point_v<T>) {
      fail(std::string(kernel) + " takes float32 or float64 handles, not " + name(probs.dtype()));
    } else {
      const T *p = probs.data<T>(), *gi = g.data<T>();
      T* z = out.data<T>();
      MaybeRelease gil(probs.size());
      parallel_for(n, k, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) {
          const T* pr = p + i * k;
          T* zr = z + i * k;
          const T gv = gi[i];
          K.typed<T>().scalar(int(Arith::mul), pr, gv, zr, k);
          zr[idx[i]] = zr[idx[i]] - gv;
        }
      });
    }
  });
}

void gather_rows(const Array& a, const Array& indices, Array& out, int64_t count,
                 int64_t width) {
  const char* kernel = "gather_rows";
  if (a.dtype() != out.dtype()) differ(a, out);
  if (count < 0 || width < 0 || out.size() != checked_mul(count, width))
    fail(std::string(kernel) + ": out holds " + std::to_string(out.size()) +
         " elements, not count x width");
  if (count == 0 || width == 0) return;
  const int64_t* idx = row_indices(indices, count, rows_of(a, width, kernel), kernel);
  visit_bits(a.dtype(), [&](auto u) {
    using U = decltype(u);
    const U* src = a.data<U>();
    U* dst = out.data<U>();
    MaybeRelease gil(out.size());
    parallel_for(count, width, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j)
        std::memcpy(dst + j * width, src + idx[j] * width, size_t(width) * sizeof(U));
    });
  });
}

void scatter_add_rows(const Array& a, const Array& indices, Array& out, int64_t count,
                      int64_t width) {
  const char* kernel = "scatter_add_rows";
  if (a.dtype() != out.dtype()) differ(a, out);
  if (count < 0 || width < 0 || a.size() != checked_mul(count, width))
    fail(std::string(kernel) + ": a holds " + std::to_string(a.size()) +
         " elements, not count x width");
  if (count == 0 || width == 0) return;
  const int64_t* idx = row_indices(indices, count, rows_of(out, width, kernel), kernel);
  visit_number(a.dtype(), kernel, [&](auto t) {
    using T = decltype(t);
    const T* src = a.data<T>();
    T* dst = out.data<T>();
    MaybeRelease gil(a.size());
    // Threads split the columns; each adds the rows in index order, so repeated indices sum
    // in the same order on every run (and as numpy's add.at does).
    parallel_for(width, count, [&](int64_t b, int64_t e) {
      for (int64_t j = 0; j < count; ++j) {
        const T* row = src + j * width;
        T* into = dst + idx[j] * width;
        for (int64_t c = b; c < e; ++c) into[c] += row[c];
      }
    });
  });
}

void sgd_update(const py::sequence& params, const py::sequence& grads,
                const py::sequence& momenta, double b, double one_minus_b, double neg_lr,
                double weight_decay) {
  sgd_update_group(optimizer_group({params, grads, momenta}, "sgd_update"), b, one_minus_b,
                   neg_lr, weight_decay);
}

namespace {

// One thread's span [s, e) of a parameter's update, each operation rounded to T in the
// contract's order (this file is compiled without FMA contraction). Every iteration touches
// index k alone, and the weight decay is a template flag, so the loop vectorizes: Adam's
// square root and division had run one element at a time (8 ms for 2.6 M parameters).
template <class T, bool kDecay>
void sgd_span(T* __restrict w, const T* __restrict grad, T* __restrict u, int64_t s, int64_t e,
              T b, T one_minus_b, T neg_lr, T wd) {
  for (int64_t k = s; k < e; ++k) {
    T gk = grad[k];
    if constexpr (kDecay) gk = gk + w[k] * wd;
    const T uk = u[k] * b + gk * one_minus_b;
    u[k] = uk;
    w[k] = w[k] + uk * neg_lr;
  }
}

template <class T, bool kDecay>
void adam_span(T* __restrict w, const T* __restrict grad, T* __restrict m, T* __restrict v,
               int64_t s, int64_t e, T b1, T one_minus_b1, T b2, T one_minus_b2, T wd, T step,
               T eps) {
  for (int64_t k = s; k < e; ++k) {
    T gk = grad[k];
    if constexpr (kDecay) gk = gk + w[k] * wd;
    const T mk = m[k] * b1 + gk * one_minus_b1;
    const T vk = v[k] * b2 + (gk * gk) * one_minus_b2;
    m[k] = mk;
    v[k] = vk;
    w[k] = w[k] + (mk * step) / (std::sqrt(vk) + eps);
  }
}

}  // namespace

void sgd_update_group(const Group& g, double b, double one_minus_b, double neg_lr,
                      double weight_decay) {
  for (size_t i = 0; i < g[0].size(); ++i) {
    visit(g[0][i]->dtype(), [&](auto t) {
      using T = decltype(t);
      if constexpr (std::is_floating_point_v<T>) {
        T* w = g[0][i]->data<T>();
        const T* grad = g[1][i]->data<T>();
        T* u = g[2][i]->data<T>();
        const T tb = T(b), tomb = T(one_minus_b), tlr = T(neg_lr), twd = T(weight_decay);
        const bool decay = weight_decay != 0;
        MaybeRelease gil(g[0][i]->size() * 4);
        parallel_for(g[0][i]->size(), 4, [&](int64_t s, int64_t e) {
          if (decay) sgd_span<T, true>(w, grad, u, s, e, tb, tomb, tlr, twd);
          else sgd_span<T, false>(w, grad, u, s, e, tb, tomb, tlr, twd);
        });
      }
    });
  }
}

void adam_update(const py::sequence& params, const py::sequence& grads,
                 const py::sequence& firsts, const py::sequence& seconds, double b1,
                 double one_minus_b1, double b2, double one_minus_b2, double weight_decay,
                 double step, double eps_hat) {
  adam_update_group(optimizer_group({params, grads, firsts, seconds}, "adam_update"), b1,
                    one_minus_b1, b2, one_minus_b2, weight_decay, step, eps_hat);
}

void adam_update_group(const Group& g, double b1, double one_minus_b1, double b2,
                       double one_minus_b2, double weight_decay, double step, double eps_hat) {
  for (size_t i = 0; i < g[0].size(); ++i) {
    visit(g[0][i]->dtype(), [&](auto t) {
      using T = decltype(t);
      if constexpr (std::is_floating_point_v<T>) {
        T* w = g[0][i]->data<T>();
        const T* grad = g[1][i]->data<T>();
        T* m = g[2][i]->data<T>();
        T* v = g[3][i]->data<T>();
        const T tb1 = T(b1), tomb1 = T(one_minus_b1), tb2 = T(b2), tomb2 = T(one_minus_b2);
        const T twd = T(weight_decay), tstep = T(step), teps = T(eps_hat);
        const bool decay = weight_decay != 0;
        MaybeRelease gil(g[0][i]->size() * 8);
        parallel_for(g[0][i]->size(), 8, [&](int64_t s, int64_t e) {
          if (decay) adam_span<T, true>(w, grad, m, v, s, e, tb1, tomb1, tb2, tomb2, twd, tstep, teps);
          else adam_span<T, false>(w, grad, m, v, s, e, tb1, tomb1, tb2, tomb2, twd, tstep, teps);
        });
      }
    });
  }
}

}  // namespace needle_cpu
