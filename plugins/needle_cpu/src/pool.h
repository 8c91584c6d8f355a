// Threads: one pool of persistent workers serves every kernel, GEMM included.
//
// Loops run on a small pool of persistent threads (NEEDLE_NUM_THREADS, default: the cores
// this process may use) with the GIL released once an input is big enough to pay for it.

#pragma once

#include <pybind11/pybind11.h>

#include "array.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <memory>
#include <thread>
#include <vector>

namespace needle_cpu {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
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
    try {
      for (int t = 1; t < n; ++t) workers_.emplace_back([this] { work(); });
    } catch (...) {  // no thread to be had: stop those started, then report
      shutdown();
      throw;
    }
  }
  // Only once no job can be running (see pool()).
  ~Pool() { shutdown(); }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
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
  void shutdown() {  // wake every worker, let it return, join it
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
      gen_.fetch_add(1);
      cv_.notify_all();
    }
    for (std::thread& t : workers_) t.join();
  }

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
      if (stop_) return;
      // Announce first, then check the job is still open: the caller closes it and then
      // waits for refs_ == 0, so a worker that gets in keeps the job's frame alive.
      refs_.fetch_add(1);
      if (open_.load() && slots_.fetch_sub(1) > 0) guarded();
      refs_.fetch_sub(1);
    }
  }

  static inline thread_local bool in_job = false;
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
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
};

// Threads a kernel may use: set_num_threads(n), get_num_threads(). Atomic: a kernel reads it
// with the GIL released while another Python thread may set it.
extern std::atomic<int> g_threads;

// The process's pool of g_threads threads, made anew after a fork or a change of g_threads.
// A caller holds it for its job; the pool it replaced is joined once its last job is done.
std::shared_ptr<Pool> pool();

// n >= 1 (else ValueError); more than max_threads() is cut to it with a RuntimeWarning.
void set_num_threads(int64_t n);
int max_threads();  // 4 x the cores this process may use: more only adds spinning workers

// At import: g_threads from NEEDLE_NUM_THREADS (a whole number >= 1; anything else, or too
// many, gives a RuntimeWarning and the default or the cap), else the cores this process may use.
void init_threads();

// Below this many elements a kernel runs on the calling thread with the GIL held.
constexpr int64_t kParallel = 1 << 15;

// f(begin, end) over [0, n): 8 chunks per thread, handed out through an atomic counter, so
// a thread the OS descheduled (a busy machine) delays the call by one chunk, not by its share.
// Long ranges are cut at multiples of 16 elements (a cache line of floats).
template <class F>
void parallel_for(int64_t n, int64_t work_per_item, F&& f) {
  int64_t work, nt = g_threads.load(std::memory_order_relaxed);
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
  pool()->run(int(nt), body);
}

// Kernels running now with the GIL released. Array.free() (called with the GIL held) waits
// until there are none, so it never pulls a buffer from under a kernel of another thread.
inline std::atomic<int> g_kernels_without_gil{0};

// Release the GIL for the lifetime of the guard when the work is big. The count goes up
// before the GIL is released and down before it is taken back.
//
// At interpreter exit CPython ends a daemon thread that asks for the GIL with pthread_exit.
// Unwinding that through a noexcept destructor (gil_scoped_release's) is std::terminate, an
// abort at exit; unwinding it at all runs destructors that drop Python references without the
// GIL. So a kernel that ends, on another thread than the main one (which finalizes and may
// still run kernels), once the interpreter is exiting parks its thread, as Python 3.14 does;
// the process is exiting and takes it down. Should finalization begin between that check and
// taking the GIL, the destructor may throw, so pthread_exit's unwinding gets through.
inline unsigned long g_main_thread = 0;  // threading.main_thread().ident, set at import

// Guards nest: inside one that released the GIL (run_program runs a whole recorded program
// in one), the kernels' own guards do nothing.
struct MaybeRelease {
  PyThreadState* saved = nullptr;
  explicit MaybeRelease(int64_t work) {
    if (work < kParallel || released) return;
    g_kernels_without_gil.fetch_add(1, std::memory_order_acq_rel);
    saved = PyEval_SaveThread();
    released = true;
  }
  ~MaybeRelease() noexcept(false) {
    if (saved == nullptr) return;
    released = false;
    g_kernels_without_gil.fetch_sub(1, std::memory_order_acq_rel);
#if PY_VERSION_HEX >= 0x030D0000
    const bool exiting = Py_IsFinalizing();
#else
    const bool exiting = _Py_IsFinalizing();
#endif
    if (exiting && PyThread_get_thread_ident() != g_main_thread)
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    PyEval_RestoreThread(saved);
  }
  MaybeRelease(const MaybeRelease&) = delete;
  MaybeRelease& operator=(const MaybeRelease&) = delete;

 private:
  static inline thread_local bool released = false;  // this thread runs without the GIL
};

// synchronize(): wait for kernels running without the GIL (none can start meanwhile: this
// thread holds the GIL). A kernel called from Python has finished when it returns.
inline void wait_for_kernels() {
  while (g_kernels_without_gil.load(std::memory_order_acquire) > 0) std::this_thread::yield();
}

// Array.free(): wait for those kernels, then release the buffer.
inline void free_when_unused(Array& a) {
  wait_for_kernels();
  a.release();
}

}  // namespace needle_cpu
