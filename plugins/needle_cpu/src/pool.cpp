// The process's thread pool: its size, and a new one after a fork or set_num_threads.
//
// Pools are shared_ptrs: a job holds its pool, so set_num_threads never pulls one from under a
// running kernel (another Python thread, GIL released), and the replaced pool's workers are
// stopped and joined when its last job ends. Switching back and forth leaks no threads.
//
// fork() copies only the forking thread. pthread_atfork handlers hold g_pool_mutex across the
// fork, so the child's copy is unlocked and consistent (a child forked while another thread
// was in pool() used to hang on it), abandon the parent's pool in the child (its workers do
// not exist there; joining them would hang), and forget the kernels other threads were
// running (Array.free() waits for those). The child's first big kernel makes a new pool.

#include "pool.h"

#include <pthread.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#ifdef __linux__
#include <sched.h>
#endif

#include "array.h"

namespace needle_cpu {
namespace {

int cores() {  // the cores this process may use
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

std::shared_ptr<Pool> g_pool;  // held by each running job too (see pool())
std::mutex g_pool_mutex;

void before_fork() { g_pool_mutex.lock(); }
void after_fork_in_parent() { g_pool_mutex.unlock(); }
void after_fork_in_child() {
  g_pool_mutex.unlock();
  if (g_pool != nullptr) new std::shared_ptr<Pool>(std::move(g_pool));  // never destroyed
  g_kernels_without_gil.store(0);
}
[[maybe_unused]] const int g_atfork =
    pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);

}  // namespace

std::atomic<int> g_threads{1};  // set by init_threads() at import

int max_threads() { return 4 * cores(); }

void init_threads() {
  const int n = cores(), cap = max_threads();
  const char* env = std::getenv("NEEDLE_NUM_THREADS");
  g_threads = n;
  if (env == nullptr || *env == '\0') return;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  while (end != env && *end == ' ') ++end;
  const std::string given = "NEEDLE_NUM_THREADS=" + std::string(env);
  if (end == env || *end != '\0' || errno == ERANGE || v < 1)
    return warn(given + " is not a whole number >= 1; needle-cpu uses " + std::to_string(n) +
                " threads (the cores this process may use)");
  g_threads = int(std::min<long long>(v, cap));
  if (v > cap)
    warn(given + " is more than 4 threads per core (" + std::to_string(n) +
         " cores here); needle-cpu uses " + std::to_string(cap));
}

std::shared_ptr<Pool> pool() {
  std::shared_ptr<Pool> old;  // a replaced pool: joined below, outside the lock, once unused
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  const int n = g_threads.load();
  if (g_pool == nullptr || g_pool->size() != n) {
    old = std::move(g_pool);
    g_pool = std::make_shared<Pool>(n);
  }
  return g_pool;
}

void set_num_threads(int64_t n) {
  if (n < 1) fail("set_num_threads needs n >= 1, got " + std::to_string(n));
  const int cap = max_threads();
  if (n > cap)
    warn("set_num_threads(" + std::to_string(n) + ") is more than 4 threads per core (" +
         std::to_string(cores()) + " cores here); needle-cpu uses " + std::to_string(cap));
  g_threads = int(std::min<int64_t>(n, cap));
}

}  // namespace needle_cpu
