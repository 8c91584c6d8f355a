// The buffer cache behind Array (array.h).
//
// Why: glibc serves big requests with mmap and hands them back with munmap, so each fresh
// multi-megabyte temporary of a training step costs a page fault per 4 KiB page touched
// (~9,000 faults, a quarter of the LSTM step's CPU time). A training loop asks for the same
// sizes step after step, so released buffers of at least 256 KiB are kept in free lists by
// size and handed out again, already mapped. Smaller ones go to malloc, whose own bins
// already recycle them well.
//
// Sizes are rounded up to 8 classes per power of two (at most 12.5% over the request), so
// nearby sizes (a smaller last batch, another sequence length) share buffers instead of each
// parking its own. The tail past a request costs address space, not memory, until written.
// The cache holds at most NEEDLE_CPU_CACHE_MB megabytes (default 1024; 0 turns it off); a
// buffer released into a full cache is freed. An allocation that fails empties the cache and
// tries again. A mutex guards the lists (Arrays are made and dropped with the GIL held today,
// but the lock keeps that an implementation detail; it is uncontended and costs ~20 ns).

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "array.h"

namespace needle_cpu {
namespace {

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
  float* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(m_);
    if (limit_ == 0) return nullptr;
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) {
      ++misses_;
      return nullptr;
    }
    float* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    ++hits_;
    return p;
  }

  bool put(float* p, size_t bytes) noexcept {
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
      for (float* p : list) std::free(p);
    free_.clear();
    cached_ = 0;
  }

  CacheInfo info() {
    std::lock_guard<std::mutex> lock(m_);
    size_t buffers = 0;
    for (auto& [bytes, list] : free_) buffers += list.size();
    return {cached_, buffers, limit_, hits_, misses_};
  }

 private:
  std::mutex m_;
  std::unordered_map<size_t, std::vector<float*>> free_;  // class bytes -> released buffers
  size_t cached_ = 0, limit_ = limit_from_env(), hits_ = 0, misses_ = 0;
};

// Never destroyed: Arrays may still be released during interpreter teardown.
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

}  // namespace

size_t alloc_bytes(int64_t size) {
  size_t bytes = (size_t(size) * sizeof(float) + 63) / 64 * 64;
  if (bytes < kCacheMin) return bytes ? bytes : 64;
  const size_t step = size_t(1) << (63 - __builtin_clzll(bytes) - 3);  // 1/8 of its octave
  return (bytes + step - 1) / step * step;
}

float* allocate(size_t bytes) {
  if (bytes >= kCacheMin)
    if (float* p = cache().take(bytes)) return p;
  auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (p == nullptr && bytes >= kCacheMin) {  // out of memory: give back what we hold, retry
    cache().empty();
    p = static_cast<float*>(std::aligned_alloc(64, bytes));
  }
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void deallocate(float* p, size_t bytes) noexcept {
  if (bytes >= kCacheMin && cache().put(p, bytes)) return;
  std::free(p);
}

void empty_cache() { cache().empty(); }

CacheInfo cache_info() { return cache().info(); }

}  // namespace needle_cpu
