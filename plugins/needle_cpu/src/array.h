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
std::string str(const Shape& v);                 // "(2, 3)", "(4,)"

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
