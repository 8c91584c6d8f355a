// Handles and argument checks.
//
// Handles are `Array`s: 64-byte aligned float32 buffers freed with their last Python
// reference. Every function checks its arguments before touching memory and throws a
// Python exception (ValueError for a bad size or view); kernels never see a bad pointer.

#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

namespace needle_cpu {

using Shape = std::vector<int64_t>;

[[noreturn]] void fail(const std::string& msg);  // raises ValueError(msg)
void warn(const std::string& msg);               // a RuntimeWarning (raises if made an error)
std::string str(const Shape& v);                 // "(2, 3)", "(4,)"

// Memory: buffers of at least kCacheMin bytes come from, and go back to, a cache of released
// buffers (memory.cpp); smaller ones from aligned_alloc / free. Sizes are rounded up to 8
// classes per power of two, so a buffer serves any request of its class.
constexpr size_t kCacheMin = size_t(256) << 10;
size_t alloc_bytes(int64_t size);           // the bytes Array(size) takes: its class
float* allocate(size_t bytes);              // 64-byte aligned; a cached buffer when one fits
void deallocate(float* p, size_t bytes) noexcept;  // into the cache while it has room
void empty_cache();                         // the cached buffers back to the system
struct CacheInfo {
  size_t bytes, buffers, limit, hits, misses;
};
CacheInfo cache_info();

class Array {
 public:
  explicit Array(int64_t size) : size_(size) {
    if (size < 0) fail("Array size must be >= 0, got " + std::to_string(size));
    if (size > (int64_t(1) << 60)) fail("Array size " + std::to_string(size) + " is too large");
    data_ = allocate(alloc_bytes(size));
  }
  ~Array() { release(); }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;

  int64_t size() const { return size_; }
  float* data() const {
    if (data_ == nullptr) fail("this needle-cpu Array was freed");
    return data_;
  }
  void release() noexcept {
    if (data_ != nullptr) deallocate(data_, alloc_bytes(size_));
    data_ = nullptr;
  }

 private:
  int64_t size_;
  float* data_ = nullptr;
};

inline void same_size(const Array& a, const Array& b, const Array& out) {
  if (a.size() != out.size() || b.size() != out.size())
    fail("buffer sizes differ: " + std::to_string(a.size()) + ", " + std::to_string(b.size()) +
         ", out " + std::to_string(out.size()));
}

inline void same_size(const Array& a, const Array& out) {
  if (a.size() != out.size())
    fail("buffer sizes differ: " + std::to_string(a.size()) + ", out " +
         std::to_string(out.size()));
}

inline int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail("size overflows int64");
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail("view extent overflows int64");
  return r;
}

// Elements of the view (shape, strides, offset) of a buffer of `size`, checked to stay inside.
int64_t check_view(int64_t size, const Shape& shape, const Shape& strides, int64_t offset);

}  // namespace needle_cpu
