// The process's thread pool: its size, and a new one after a fork or set_num_threads.
//
// Pools are shared_ptrs: a job holds its pool, so set_num_threads never pulls one from under a
// running kernel (another Python thread, GIL released), and the replaced pool's workers are
// stopped and joined when its last job ends. Switching back and forth leaks no threads.

#include "pool.h"

#include <cstdlib>
#include <string>

#ifdef __linux__
#include <sched.h>
#endif
#include <unistd.h>

#include "array.h"

namespace needle_cpu {
namespace {

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

std::shared_ptr<Pool> g_pool;  // held by each running job too (see pool())
pid_t g_pool_pid = 0;
std::mutex g_pool_mutex;

}  // namespace

std::atomic<int> g_threads{default_threads()};

std::shared_ptr<Pool> pool() {
  std::shared_ptr<Pool> old;  // a replaced pool: joined below, outside the lock, once unused
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  const int n = g_threads.load();
  if (g_pool != nullptr && g_pool_pid != getpid()) {
    // A forked child has the parent's Pool but none of its threads: joining them would hang,
    // so that one is left alone, never destroyed.
    new std::shared_ptr<Pool>(std::move(g_pool));
  }
  if (g_pool == nullptr || g_pool->size() != n) {
    old = std::move(g_pool);
    g_pool = std::make_shared<Pool>(n);
    g_pool_pid = getpid();
  }
  return g_pool;
}

void set_num_threads(int64_t n) {
  if (n < 1) fail("set_num_threads needs n >= 1, got " + std::to_string(n));
  g_threads = int(std::min<int64_t>(n, 1024));  // as NEEDLE_NUM_THREADS
}

}  // namespace needle_cpu
