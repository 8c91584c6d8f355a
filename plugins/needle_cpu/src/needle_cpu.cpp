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

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>  // for kernels.h: the intrinsics carry their own target attributes
#endif

#include <cblas.h>  // scipy-openblas32's header: every symbol carries a scipy_ prefix

namespace py = pybind11;
using Shape = std::vector<int64_t>;

#define NDL_ISA_AVX2 0
namespace isa_base {
#include "kernels.h"
}
#undef NDL_ISA_AVX2
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NDL_HAVE_AVX2 1
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define NDL_ISA_AVX2 1
namespace isa_avx2 {
#include "kernels.h"
}
#undef NDL_ISA_AVX2
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

namespace {

// ---------------------------------------------------------------- instruction-set dispatch

struct Kernels {
  const char* name;
  void (*binary)(int, const float*, const float*, float*, int64_t);
  void (*scalar)(int, const float*, float, float*, int64_t);
  void (*unary)(int, const float*, float*, int64_t);
  float (*sum_block)(const float*, int64_t);
  float (*max_block)(const float*, int64_t);
  void (*copy2d)(const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
  void (*gemm_small_k)(const float* const*, int64_t, int64_t, int64_t, const float*, float*,
                       int64_t);
};

#define NDL_TABLE(ns) \
  Kernels {                                                                      \
    #ns, ns::binary, ns::scalar, ns::unary, ns::sum_block, ns::max_block, ns::copy2d, \
        ns::gemm_small_k                                                           \
  }

Kernels pick_kernels() {
#ifdef NDL_HAVE_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      std::getenv("NEEDLE_CPU_BASELINE") == nullptr)  // the env var forces the baseline (tests)
    return NDL_TABLE(isa_avx2);
#endif
  return NDL_TABLE(isa_base);
}

const Kernels K = pick_kernels();

// ---------------------------------------------------------------- threads

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

int default_threads() {
  if (const char* env = std::getenv("NEEDLE_NUM_THREADS")) {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1) return int(std::min(n, 1024L));
  }
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

// A fixed set of workers that spin for the next job for about a millisecond, then sleep. A job is a callable
// that shares out its own work through an atomic counter, so it is correct whoever joins:
// the calling thread always runs it, and up to nt - 1 workers that are awake in time join
// in. The caller never waits for a worker that has not started (a busy machine, a sleeping
// thread); it waits only for those inside the job. One job at a time: a concurrent caller
// (another Python thread) or a nested one runs its job alone.
class Pool {
 public:
  explicit Pool(int n) : n_(n) {
    for (int t = 1; t < n; ++t) std::thread([this] { work(); }).detach();
  }
  int size() const { return n_; }

  template <class F>
  void run(int nt, F& fn) {
    if (nt <= 1 || in_job) return fn();
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return fn();
    in_job = true;
    ctx_ = &fn;
    call_ = [](void* ctx) { (*static_cast<F*>(ctx))(); };
    slots_.store(nt - 1);
    open_.store(true);
    {
      std::lock_guard<std::mutex> lock(m_);
      gen_.fetch_add(1);
      for (int i = 0; i < std::min(nt - 1, sleepers_); ++i) cv_.notify_one();
    }
    guarded();
    open_.store(false);  // no one joins from now on; wait for those inside
    for (int spins = 0; refs_.load() != 0; ++spins)
      if (spins < 100000) cpu_relax();
      else std::this_thread::yield();
    in_job = false;
    if (error_) {  // a worker's exception (bad_alloc, say) surfaces in the caller
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void guarded() {
    try {
      call_(ctx_);
    } catch (...) {
      std::lock_guard<std::mutex> lock(m_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void work() {
    in_job = true;
    uint64_t seen = 0;
    for (;;) {
      uint64_t g;
      auto spin_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
      for (int spins = 0; (g = gen_.load()) == seen; ++spins) {
        // Spin ~1 ms (the gap between two ops of a training step), then sleep.
        if ((spins & 255) != 0 || std::chrono::steady_clock::now() < spin_until) {
          cpu_relax();
          continue;
        }
        std::unique_lock<std::mutex> lock(m_);
        ++sleepers_;
        cv_.wait(lock, [&] { return gen_.load() != seen; });
        --sleepers_;
      }
      seen = g;
      // Announce first, then check the job is still open: the caller closes it and then
      // waits for refs_ == 0, so a worker that gets in keeps the job's frame alive.
      refs_.fetch_add(1);
      if (open_.load() && slots_.fetch_sub(1) > 0) guarded();
      refs_.fetch_sub(1);
    }
  }

  static thread_local bool in_job;
  const int n_;
  std::mutex busy_, m_;
  std::condition_variable cv_;
  int sleepers_ = 0;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> refs_{0}, slots_{0};
  std::atomic<bool> open_{false};
  void (*call_)(void*) = nullptr;
  void* ctx_ = nullptr;
  std::exception_ptr error_;
};

thread_local bool Pool::in_job = false;
int g_threads = default_threads();
Pool* g_pool = nullptr;  // never destroyed: workers may still sleep at interpreter exit
pid_t g_pool_pid = 0;
std::mutex g_pool_mutex;

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool == nullptr || g_pool_pid != getpid() || g_pool->size() != g_threads) {
    g_pool = new Pool(g_threads);  // a forked child starts without the parent's threads
    g_pool_pid = getpid();
  }
  return *g_pool;
}

// Below this many elements a kernel runs on the calling thread with the GIL held.
constexpr int64_t kParallel = 1 << 15;

// f(begin, end) over [0, n): 8 chunks per thread, handed out through an atomic counter, so
// a thread the OS descheduled (a busy machine) delays the call by one chunk, not by its share.
// Long ranges are cut at multiples of 16 elements (a cache line of floats).
template <class F>
void parallel_for(int64_t n, int64_t work_per_item, F&& f) {
  int64_t work, nt = g_threads;
  if (!__builtin_mul_overflow(n, work_per_item, &work)) nt = std::min(nt, work / kParallel);
  nt = std::min(nt, n);
  if (nt <= 1) return f(int64_t(0), n);
  const int64_t chunks = std::min(n, nt * 8);
  const int64_t mask = n >= 1024 * chunks ? ~int64_t(15) : ~int64_t(0);
  auto cut = [&](int64_t i) { return i == chunks ? n : (n * i / chunks) & mask; };
  std::atomic<int64_t> next{0};
  auto body = [&] {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      const int64_t b = cut(c), e = cut(c + 1);
      if (b < e) f(b, e);
    }
  };
  pool().run(int(nt), body);
}

// Release the GIL for the lifetime of the guard when the work is big.
struct MaybeRelease {
  std::optional<py::gil_scoped_release> release;
  explicit MaybeRelease(int64_t work) {
    if (work >= kParallel) release.emplace();
  }
};

// ---------------------------------------------------------------- handles and checks

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

std::string str(const Shape& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

class Array {
 public:
  explicit Array(int64_t size) : size_(size) {
    if (size < 0) fail("Array size must be >= 0, got " + std::to_string(size));
    if (size > (int64_t(1) << 60)) fail("Array size " + std::to_string(size) + " is too large");
    size_t bytes = (size_t(size) * sizeof(float) + 63) / 64 * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
    if (data_ == nullptr) throw std::bad_alloc();
  }
  ~Array() { std::free(data_); }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;

  int64_t size() const { return size_; }
  float* data() const {
    if (data_ == nullptr) fail("this needle-cpu Array was freed");
    return data_;
  }
  void release() {
    std::free(data_);
    data_ = nullptr;
  }

 private:
  int64_t size_;
  float* data_ = nullptr;
};

void same_size(const Array& a, const Array& b, const Array& out) {
  if (a.size() != out.size() || b.size() != out.size())
    fail("buffer sizes differ: " + std::to_string(a.size()) + ", " + std::to_string(b.size()) +
         ", out " + std::to_string(out.size()));
}

void same_size(const Array& a, const Array& out) {
  if (a.size() != out.size())
    fail("buffer sizes differ: " + std::to_string(a.size()) + ", out " +
         std::to_string(out.size()));
}

int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail("size overflows int64");
  return r;
}

int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail("view extent overflows int64");
  return r;
}

// Elements of the view (shape, strides, offset) of a buffer of `size`, checked to stay inside.
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

// ---------------------------------------------------------------- strided copies

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

void check_dims(const Shape& shape) {
  if (shape.size() > 64) fail("views of more than 64 dimensions are not supported");
}

// ---------------------------------------------------------------- contract functions

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
  py::array_t<float> result(std::vector<py::ssize_t>(shape.begin(), shape.end()));
  if (n == 0) return result;
  const float* src = a.data() + offset;
  float* dst = result.mutable_data();
  {
    MaybeRelease gil(n);
    strided_copy(src, dst, shape, strides, compact_strides(shape));
  }
  return result;
}

void from_numpy(py::array_t<float, py::array::c_style | py::array::forcecast> arr, Array& out) {
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

enum Op { ADD, MUL, DIV, MAXIMUM, EQ, GE, SQUARE };

void binary(int op, const Array& a, const Array& b, Array& out) {
  same_size(a, b, out);
  const float *x = a.data(), *y = b.data();
  float* z = out.data();
  MaybeRelease gil(out.size());
  parallel_for(out.size(), 1, [&](int64_t s, int64_t e) {
    K.binary(op, x + s, y + s, z + s, e - s);
  });
}

void scalar(int op, const Array& a, float val, Array& out) {
  same_size(a, out);
  const float* x = a.data();
  float* z = out.data();
  MaybeRelease gil(out.size());
  parallel_for(out.size(), 1, [&](int64_t s, int64_t e) {
    K.scalar(op, x + s, val, z + s, e - s);
  });
}

// f(x[i]) or f(x[i], y[i]) elementwise, for what SIMD does not cover (powers).
template <class F>
void map_scalar(const float* x, const float* y, float* z, int64_t n, F f) {
  MaybeRelease gil(n * 8);
  parallel_for(n, 8, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) z[i] = f(x[i], y ? y[i] : 0.f);
  });
}

void scalar_power(const Array& a, float val, Array& out) {
  same_size(a, out);
  const float* x = a.data();
  float* z = out.data();
  if (val == 2.f) return scalar(SQUARE, a, val, out);
  if (val == 1.f) return map_scalar(x, nullptr, z, a.size(), [](float v, float) { return v; });
  if (val == 0.5f)
    return map_scalar(x, nullptr, z, a.size(), [](float v, float) { return std::sqrt(v); });
  if (val == -1.f)
    return map_scalar(x, nullptr, z, a.size(), [](float v, float) { return 1.f / v; });
  map_scalar(x, nullptr, z, a.size(), [val](float v, float) { return std::pow(v, val); });
}

void ewise_power(const Array& a, const Array& b, Array& out) {
  same_size(a, b, out);
  map_scalar(a.data(), b.data(), out.data(), a.size(),
             [](float v, float p) { return std::pow(v, p); });
}

void unary(int op, const Array& a, Array& out) {
  same_size(a, out);
  const float* x = a.data();
  float* z = out.data();
  MaybeRelease gil(out.size() * 4);
  parallel_for(out.size(), 4, [&](int64_t s, int64_t e) { K.unary(op, x + s, z + s, e - s); });
}

// out[i] = reduction of row i of a (rows of reduce_size). Long rows are cut into blocks
// combined in double (sum) so 16M-element sums stay accurate, and split across threads.
template <bool Sum>
void reduce(const Array& a, Array& out, int64_t reduce_size) {
  if (reduce_size <= 0 || a.size() != checked_mul(out.size(), reduce_size))
    fail("cannot reduce " + std::to_string(a.size()) + " elements into " +
         std::to_string(out.size()) + " by " + std::to_string(reduce_size));
  const int64_t rows = out.size(), r = reduce_size;
  if (rows == 0) return;
  const float* x = a.data();
  float* z = out.data();
  MaybeRelease gil(a.size());
  constexpr int64_t B = 4096;
  auto block = [](const float* p, int64_t len) {
    return Sum ? K.sum_block(p, len) : K.max_block(p, len);
  };
  if (rows >= g_threads || r < B * 4) {
    parallel_for(rows, r, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const float* p = x + i * r;
        if (r <= B) {
          z[i] = block(p, r);
          continue;
        }
        double acc = Sum ? 0.0 : double(p[0]);
        for (int64_t j = 0; j < r; j += B) {
          float v = block(p + j, std::min(B, r - j));
          acc = Sum ? acc + v : (v >= acc || v != v ? v : acc);
        }
        z[i] = float(acc);
      }
    });
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {  // few long rows: split each across the threads
    const float* p = x + i * r;
    const int64_t blocks = (r + B - 1) / B;
    std::vector<double> part(static_cast<size_t>(blocks));
    parallel_for(blocks, B, [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) part[j] = block(p + j * B, std::min(B, r - j * B));
    });
    double acc = Sum ? 0.0 : part[0];
    for (double v : part) acc = Sum ? acc + v : (v >= acc || v != v ? v : acc);
    z[i] = float(acc);
  }
}

// ---------------------------------------------------------------- GEMM

void check_blas_dims(std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) {
    if (d < 0) fail("matrix dimensions must be >= 0");
    if (d > INT32_MAX) fail("matrix dimension " + std::to_string(d) + " exceeds 2^31 - 1");
  }
}

// c (m, p) = a (m, n) @ b (n, p), all compact row-major. OpenBLAS runs single-threaded
// (set at import); a big product is cut into row blocks (column blocks when p > m), one per
// thread of our pool, so one pool serves every kernel and no second one spins against it.
void sgemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t p) {
  if (m == 0 || p == 0) return;
  if (n == 0) return void(std::fill_n(c, m * p, 0.f));
  auto block = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(r1 - r0), int(c1 - c0),
                      int(n), 1.f, a + r0 * n, int(n), b + c0, int(p), 0.f, c + r0 * p + c0,
                      int(p));
  };
  const int64_t nt = std::min<int64_t>(g_threads, m * n * p / (1 << 18));
  if (nt <= 1) return block(0, m, 0, p);
  const bool rows = m >= p;
  const int64_t len = rows ? m : p;
  // One block per thread (each block packs b again), claimed through a counter: a worker
  // that has not woken yet when the caller is done leaves its block to the caller.
  auto cut = [&](int64_t i) { return i == nt ? len : (len * i / nt) & ~int64_t(15); };
  std::atomic<int64_t> next{0};
  auto body = [&] {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < nt;) {
      const int64_t s = cut(c), e = cut(c + 1);  // multiples of 16, the kernels' unrolling
      if (s < e) rows ? block(s, e, 0, p) : block(0, m, s, e);
    }
  };
  pool().run(int(nt), body);
}

void matmul(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p) {
  check_blas_dims({m, n, p});
  if (a.size() != checked_mul(m, n) || b.size() != checked_mul(n, p) ||
      out.size() != checked_mul(m, p))
    fail("matmul sizes " + std::to_string(a.size()) + ", " + std::to_string(b.size()) + ", " +
         std::to_string(out.size()) + " do not match m=" + std::to_string(m) +
         " n=" + std::to_string(n) + " p=" + std::to_string(p));
  if (out.size() == 0) return;
  const float *x = a.data(), *y = b.data();
  float* z = out.data();
  MaybeRelease gil(checked_mul(out.size(), n));
  sgemm(x, y, z, m, n, p);
}

void bmm(const Array& a, const Array& b, Array& out, int64_t batch, int64_t m, int64_t n,
         int64_t p) {
  check_blas_dims({batch, m, n, p});
  if (a.size() != checked_mul(batch, checked_mul(m, n)) ||
      b.size() != checked_mul(batch, checked_mul(n, p)) ||
      out.size() != checked_mul(batch, checked_mul(m, p)))
    fail("bmm sizes do not match batch=" + std::to_string(batch) + " m=" + std::to_string(m) +
         " n=" + std::to_string(n) + " p=" + std::to_string(p));
  if (out.size() == 0) return;
  const float *x = a.data(), *y = b.data();
  float* z = out.data();
  const int64_t work = checked_mul(m * p, n);
  MaybeRelease gil(checked_mul(work, batch));
  if (batch < 2 * g_threads) {  // few products: each one uses all the threads
    for (int64_t i = 0; i < batch; ++i) sgemm(x + i * m * n, y + i * n * p, z + i * m * p, m, n, p);
    return;
  }
  parallel_for(batch, work, [&](int64_t s, int64_t e) {  // many: the batch across the threads
    for (int64_t i = s; i < e; ++i) sgemm(x + i * m * n, y + i * n * p, z + i * m * p, m, n, p);
  });
}

// NHWC input (n, h, w, cin), weight (k, k, cin, cout), zero padding: im2col rows of
// k*k*cin values, then GEMM of those rows with the (k*k*cin, cout) weight into the output.
void conv2d(const Array& a, const Array& wt, Array& out, int64_t n, int64_t h, int64_t w,
            int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t padding) {
  for (int64_t v : {n, h, w, cin, cout, k, stride, padding})
    if (v < 0 || v > INT32_MAX) fail("conv2d: arguments must be in [0, 2^31)");
  if (k < 1 || stride < 1) fail("conv2d: k and stride must be >= 1");
  const int64_t ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1;
  if (h + 2 * padding < k || w + 2 * padding < k)
    fail("conv2d: kernel " + std::to_string(k) + " is larger than the padded input");
  const int64_t kk = checked_mul(k * k, cin), rows = checked_mul(n, ho * wo);
  check_blas_dims({rows, kk, cout});
  if (a.size() != checked_mul(n, checked_mul(h * w, cin)) || wt.size() != checked_mul(kk, cout) ||
      out.size() != checked_mul(rows, cout))
    fail("conv2d: buffer sizes " + std::to_string(a.size()) + ", " + std::to_string(wt.size()) +
         ", " + std::to_string(out.size()) + " do not match the shapes");
  if (out.size() == 0) return;
  if (kk == 0) return fill(out, 0.f);
  const float *x = a.data(), *f = wt.data();
  float* z = out.data();
  MaybeRelease gil(checked_mul(out.size(), kk));
  if (k == 1 && stride == 1 && padding == 0) return sgemm(x, f, z, rows, cin, cout);
  const int64_t row = k * cin;  // one kernel row of a patch: contiguous in the input
  auto im2col = [&](int64_t r0, int64_t r1, float* __restrict dst) {  // patch rows [r0, r1)
    int64_t b = r0 / (ho * wo), oy = r0 / wo % ho, ox = r0 % wo;
    for (int64_t g = r0; g < r1; ++g) {
      const int64_t ix0 = ox * stride - padding;
      const bool inside_x = ix0 >= 0 && ix0 + k <= w;
      for (int64_t ky = 0; ky < k; ++ky, dst += row) {
        const int64_t iy = oy * stride - padding + ky;
        const float* __restrict src = x + ((b * h + iy) * w + ix0) * cin;
        if (iy < 0 || iy >= h)  // short rows: plain loops beat memcpy calls
          for (int64_t j = 0; j < row; ++j) dst[j] = 0.f;
        else if (inside_x)
          for (int64_t j = 0; j < row; ++j) dst[j] = src[j];
        else
          for (int64_t kx = 0; kx < k; ++kx) {
            const bool inside = ix0 + kx >= 0 && ix0 + kx < w;
            for (int64_t c = 0; c < cin; ++c) dst[kx * cin + c] = inside ? src[kx * cin + c] : 0.f;
          }
      }
      if (++ox == wo) ox = 0, oy = oy + 1 == ho ? (++b, 0) : oy + 1;  // next output pixel
    }
  };
  // A weight that fits in L2 (k*k*cin*cout <= 128K floats, most CNN layers): our register-tiled
  // GEMM reads each patch as k rows of k*cin floats straight from the input; only patches
  // that cross the padding are copied (with their zeros). Bigger weights: im2col + OpenBLAS.
  if (kk * cout <= (1 << 17)) {
    constexpr int64_t T = 96;  // output pixels per tile (a multiple of the kernel's 6 rows)
    parallel_for((rows + T - 1) / T, T * kk * cout, [&](int64_t s, int64_t e) {
      std::vector<const float*> ptrs(size_t(T * k));
      std::vector<float> scratch(size_t(T * kk));
      for (int64_t t = s; t < e; ++t) {
        const int64_t r0 = t * T, r1 = std::min(rows, r0 + T);
        int64_t b = r0 / (ho * wo), oy = r0 / wo % ho, ox = r0 % wo;
        for (int64_t g = r0; g < r1; ++g) {
          const int64_t i = g - r0, iy0 = oy * stride - padding, ix0 = ox * stride - padding;
          const float** p = ptrs.data() + i * k;
          if (iy0 >= 0 && iy0 + k <= h && ix0 >= 0 && ix0 + k <= w) {
            for (int64_t ky = 0; ky < k; ++ky) p[ky] = x + ((b * h + iy0 + ky) * w + ix0) * cin;
          } else {
            float* patch = scratch.data() + i * kk;
            im2col(g, g + 1, patch);
            for (int64_t ky = 0; ky < k; ++ky) p[ky] = patch + ky * row;
          }
          if (++ox == wo) ox = 0, oy = oy + 1 == ho ? (++b, 0) : oy + 1;
        }
        K.gemm_small_k(ptrs.data(), r1 - r0, k, row, f, z + r0 * cout, cout);
      }
    });
    return;
  }
  // Tiles of patch rows small enough to stay in L2 between im2col and their GEMM.
  const int64_t tile = std::clamp<int64_t>((1 << 16) / kk, 16, 4096);
  const int64_t tiles = (rows + tile - 1) / tile;
  if (tiles >= 2 * g_threads) {  // each thread: im2col a tile, multiply it, next tile
    parallel_for(tiles, tile * kk * cout, [&](int64_t s, int64_t e) {
      std::vector<float> cols(size_t(tile * kk));
      for (int64_t t = s; t < e; ++t) {
        const int64_t r0 = t * tile, r1 = std::min(rows, r0 + tile);
        im2col(r0, r1, cols.data());
        sgemm(cols.data(), f, z + r0 * cout, r1 - r0, kk, cout);
      }
    });
    return;
  }
  std::vector<float> cols(size_t(rows * kk));  // few rows: whole im2col, one threaded GEMM
  parallel_for(rows, kk, [&](int64_t s, int64_t e) { im2col(s, e, cols.data() + s * kk); });
  sgemm(cols.data(), f, z, rows, kk, cout);
}

void set_num_threads(int n) {
  if (n < 1) fail("set_num_threads needs n >= 1, got " + std::to_string(n));
  g_threads = n;
}

}  // namespace

PYBIND11_MODULE(_ext, m) {
  m.doc() = "needle-cpu: the needle backend contract in C++ (see needle.contract)";
  m.attr("__device_name__") = "cpu";
  m.attr("__isa__") = K.name;
  scipy_openblas_set_num_threads(1);  // our pool does the threading (see sgemm)

  py::class_<Array>(m, "Array", "A 64-byte aligned buffer of float32 on the host.")
      .def(py::init<int64_t>(), py::arg("size"))
      .def_property_readonly("size", &Array::size)
      .def("ptr", [](const Array& a) { return reinterpret_cast<uintptr_t>(a.data()); })
      .def("free", &Array::release, "Release the memory now; any later use raises ValueError.")
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
        "Threads for every kernel of this backend.");
  m.def("get_num_threads", [] { return g_threads; });
}
