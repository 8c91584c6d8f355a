// The buffer cache behind Array (array.h).
//
// Why: glibc serves big requests with mmap and hands them back with munmap, so each fresh
// multi-megabyte temporary of a training step paid a page fault per 4 KiB page it touched
// (LSTM LM step: ~12,500 faults, ~40 ms of system time out of ~140 ms). A training loop asks
// for the same sizes step after step, so released buffers of at least kCacheMin (256 KiB) are
// kept in free lists by size class and handed out again, already mapped. Smaller ones go
// straight back to aligned_alloc/free, whose bins recycle them well.
//
// Sizes are rounded up to 8 classes per power of two (at most 12.5% over the request), so
// nearby sizes (a smaller last batch, another sequence length) share buffers instead of each
// parking its own. The tail past a request costs address space, not memory, until written.
// The cache holds at most NEEDLE_CPU_CACHE_MB megabytes (default 1024; 0 turns it off); a
// buffer released into a full cache is freed. Cached memory is memory the rest of the process
// cannot have, so when an allocation of any size fails the cache is emptied and the
// allocation tried once more; strided.cpp does the same for numpy's arrays (to_numpy,
// from_numpy), and module.cpp empties it whenever a call runs out of memory. A mutex guards
// the lists (Arrays are made and dropped with the GIL held today, but the lock keeps that an
// implementation detail; it is uncontended and costs ~20 ns); fork() holds it (pthread_atfork),
// so a child never inherits it locked.
//
// Buffers of at least kHuge (4 MiB, numpy's threshold too) start on a 2 MiB boundary and are
// advised to the kernel as transparent huge pages (MADV_HUGEPAGE): one page fault and one TLB
// entry per 2 MiB instead of 512. Without the advice they got none on the development machine
// (THP enabled=always, defrag=madvise), while numpy's own arrays did.

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "array.h"

namespace needle_cpu {
namespace {

std::atomic<size_t> g_allocated{0};  // bytes of the buffers in use (allocated, not cached)

size_t limit_from_env() {
  const char* env = std::getenv("NEEDLE_CPU_CACHE_MB");
  if (env == nullptr || *env == '\0') return size_t(1024) << 20;
  char* end = nullptr;
  long long mb = std::strtoll(env, &end, 10);
  if (end == env || *end != '\0') return size_t(1024) << 20;  // not a number: the default
  return mb <= 0 ? 0 : size_t(std::min(mb, 1LL << 40)) << 20;
}

class Cache {
 public:
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(m_);
    if (limit_ == 0) return nullptr;
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) {
      ++misses_;
      return nullptr;
    }
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    ++hits_;
    return p;
  }

  bool put(void* p, size_t bytes) noexcept {
    std::lock_guard<std::mutex> lock(m_);
    if (cached_ + bytes > limit_) return false;
    try {
      free_[bytes].push_back(p);
    } catch (...) {  // no memory for the bookkeeping: the caller frees it
      return false;
    }
    cached_ += bytes;
    return true;
  }

  void empty() {
    std::lock_guard<std::mutex> lock(m_);
    for (auto& [bytes, list] : free_)
      for (void* p : list) std::free(p);
    free_.clear();
    cached_ = 0;
  }

  // fork(): held across it, so the child's copy of the lists is consistent and unlocked.
  void lock() { m_.lock(); }
  void unlock() { m_.unlock(); }

  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(m_);
    size_t buffers = 0;
    for (auto& [bytes, list] : free_) buffers += list.size();
    return {g_allocated.load(std::memory_order_relaxed), cached_, buffers, limit_, hits_, misses_};
  }

  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(m_);
    return cached_;
  }

 private:
  std::mutex m_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // class bytes -> released buffers
  size_t cached_ = 0, limit_ = limit_from_env(), hits_ = 0, misses_ = 0;
};

// Never destroyed: Arrays may still be released during interpreter teardown.
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

void lock_cache() { cache().lock(); }
void unlock_cache() { cache().unlock(); }
[[maybe_unused]] const int g_atfork = pthread_atfork(lock_cache, unlock_cache, unlock_cache);

constexpr size_t kHuge = size_t(4) << 20;
constexpr size_t kHugePage = size_t(2) << 20;

void* system_alloc(size_t bytes) {
  if (bytes < kHuge) return std::aligned_alloc(64, bytes);
  const size_t whole = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, whole);
#ifdef MADV_HUGEPAGE
  if (p != nullptr) madvise(p, whole, MADV_HUGEPAGE);  // advice: a refusal changes nothing
#endif
  return p;
}

}  // namespace

size_t alloc_bytes(size_t bytes) {
  bytes = (bytes + 63) / 64 * 64;
  if (bytes < kCacheMin) return bytes ? bytes : 64;
  const size_t step = size_t(1) << (63 - __builtin_clzll(bytes) - 3);  // 1/8 of its octave
  return (bytes + step - 1) / step * step;
}

void* allocate(size_t bytes) {
  void* p = bytes >= kCacheMin ? cache().take(bytes) : nullptr;
  if (p == nullptr) p = system_alloc(bytes);
  if (p == nullptr && cache().cached_bytes() > 0) {  // out of memory: give back what we hold
    cache().empty();
    p = system_alloc(bytes);
  }
  if (p == nullptr) throw std::bad_alloc();
  g_allocated.fetch_add(bytes, std::memory_order_relaxed);
  return p;
}

void deallocate(void* p, size_t bytes) noexcept {
  g_allocated.fetch_sub(bytes, std::memory_order_relaxed);
  if (bytes >= kCacheMin && cache().put(p, bytes)) return;
  std::free(p);
}

void empty_cache() { cache().empty(); }

MemoryStats memory_stats() { return cache().stats(); }

}  // namespace needle_cpu
