// The process's thread pool: its size, and a new one after a fork or set_num_threads.

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

Pool* g_pool = nullptr;  // never destroyed: workers may still sleep at interpreter exit
pid_t g_pool_pid = 0;
std::mutex g_pool_mutex;

}  // namespace

int g_threads = default_threads();

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool == nullptr || g_pool_pid != getpid() || g_pool->size() != g_threads) {
    g_pool = new Pool(g_threads);  // a forked child starts without the parent's threads
    g_pool_pid = getpid();
  }
  return *g_pool;
}

void set_num_threads(int n) {
  if (n < 1) fail("set_num_threads needs n >= 1, got " + std::to_string(n));
  g_threads = n;
}

}  // namespace needle_cpu
