// Handles, dtypes and argument checks.
//
// Handles are `Array`s: buffers of `size` elements of one dtype (float32, float64, int32,
// int64, bool as one byte), 64-byte aligned when this backend allocated them, freed with their
// last Python reference. An Array may instead borrow memory from a DLPack producer (see
// dlpack.cpp), or lend its own to numpy views; then a shared `Storage` owns the memory, and it
// is released when the Array and every view are gone. Every function checks its arguments
// before touching memory and throws a Python exception (ValueError for a bad size, dtype or
// view); kernels never see a bad pointer.

#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace needle_cpu {

using Shape = std::vector<int64_t>;

[[noreturn]] void fail(const std::string& msg);  // raises ValueError(msg)
void warn(const std::string& msg);               // a RuntimeWarning (raises if made an error)
std::string str(const Shape& v);                 // "(2, 3)", "(4,)"

// ---------------------------------------------------------------------------------- dtypes

enum class DType : uint8_t { float32, float64, int32, int64, bool_ };
constexpr int kDTypes = 5;

const char* name(DType d);  // "float32", ...
inline size_t itemsize(DType d) {
  constexpr size_t sizes[kDTypes] = {4, 8, 4, 8, 1};
  return sizes[int(d)];
}
DType parse_dtype(const std::string& s);  // ValueError naming the dtypes held, for others
void* name_object(DType d);               // the name as an interned Python str (borrowed)
DType dtype_from(void* py_name);          // a str naming a dtype: the interned one is quick

// The C++ type of each dtype: bool is one byte, 0 or 1, stored as uint8_t.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::float64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::int32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::int64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::bool_; };

// f(T()) for the C++ type T of dtype d. Numbers: the four numeric dtypes (no bool).
template <class F>
void visit(DType d, F&& f) {
  switch (d) {
    case DType::float32: return f(float());
    case DType::float64: return f(double());
    case DType::int32: return f(int32_t());
    case DType::int64: return f(int64_t());
    case DType::bool_: return f(uint8_t());
  }
}

// f(U()) for an unsigned type U of the dtype's width: copies move bits, not values.
template <class F>
void visit_bits(DType d, F&& f) {
  switch (itemsize(d)) {
    case 1: return f(uint8_t());
    case 4: return f(uint32_t());
    default: return f(uint64_t());
  }
}

// ---------------------------------------------------------------------------------- memory

// Buffers of at least kCacheMin bytes come from, and go back to, a cache of released buffers
// (memory.cpp); smaller ones from aligned_alloc / free. Sizes are rounded up to 8 classes per
// power of two, so a buffer serves any request of its class.
constexpr size_t kCacheMin = size_t(256) << 10;
size_t alloc_bytes(size_t bytes);                 // the bytes a request takes: its class
void* allocate(size_t bytes);                     // 64-byte aligned; a cached buffer if one fits
void deallocate(void* p, size_t bytes) noexcept;  // into the cache while it has room
void empty_cache();                               // the cached buffers back to the system
struct MemoryStats {
  size_t allocated_bytes, cached_bytes, cached_buffers, limit_bytes, hits, misses;
};
MemoryStats memory_stats();

// Memory shared beyond one Array: either allocated here (released with deallocate) or borrowed
// from a Python object (a DLPack producer's numpy array), which it keeps alive. Destroyed with
// the GIL held: its holders are Python objects (Arrays, numpy views, buffer exports).
struct Storage {
  void* data;
  size_t bytes;   // allocated here: the bytes to deallocate; borrowed: 0
  void* owner;    // borrowed: a new reference to the PyObject that owns the memory
  Storage(void* d, size_t b, void* o) : data(d), bytes(b), owner(o) {}
  ~Storage();     // deallocate, or drop the owner (array.cpp)
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

class Array {
 public:
  Array(int64_t size, DType dtype) : size_(size), dtype_(dtype) {
    if (size < 0) fail("Array size must be >= 0, got " + std::to_string(size));
    if (size > (int64_t(1) << 59)) fail("Array size " + std::to_string(size) + " is too large");
    bytes_ = alloc_bytes(size_t(size) * itemsize(dtype));
    data_ = allocate(bytes_);
  }
  // An Array over shared memory: a DLPack producer's, or (data given) a range of another
  // Array's (slices in strided.cpp), which keeps that memory alive.
  Array(std::shared_ptr<Storage> s, int64_t size, DType dtype, void* data = nullptr)
      : size_(size), dtype_(dtype), data_(data ? data : s->data), shared_(std::move(s)) {}
  ~Array() { release(); }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;

  int64_t size() const { return size_; }
  DType dtype() const { return dtype_; }
  void* raw() const {
    if (data_ == nullptr) fail("this needle-cpu Array was freed");
    return data_;
  }
  template <class T>
  T* data() const {  // callers check the dtype first (same(), want())
    return static_cast<T*>(raw());
  }
  // The memory's shared owner, made on first use (numpy views and buffer exports hold it).
  std::shared_ptr<Storage> share() {
    if (shared_ == nullptr) shared_ = std::make_shared<Storage>(raw(), bytes_, nullptr);
    return shared_;
  }
  void release() noexcept {
    if (shared_ != nullptr) shared_.reset();
    else if (data_ != nullptr) deallocate(data_, bytes_);
    data_ = nullptr;
  }

 private:
  int64_t size_;
  DType dtype_;
  size_t bytes_ = 0;
  void* data_ = nullptr;
  std::shared_ptr<Storage> shared_;  // set once the memory is borrowed or lent out
};

// ---------------------------------------------------------------------------------- checks

// Equal sizes and dtypes (ValueError naming both otherwise). Inline: every kernel call checks.
[[noreturn]] void differ(const Array& a, const Array& out);
[[noreturn]] void differ(const Array& a, const Array& b, const Array& out);
inline void same(const Array& a, const Array& out) {
  if (a.size() != out.size() || a.dtype() != out.dtype()) differ(a, out);
}
inline void same(const Array& a, const Array& b, const Array& out) {
  if (a.size() != out.size() || b.size() != out.size() || a.dtype() != b.dtype() ||
      a.dtype() != out.dtype())
    differ(a, b, out);
}
// `a` holds dtype d, else ValueError naming `what` (a comparison writes bool, say).
void want(const Array& a, DType d, const char* what);

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

// Elements of the view (shape, strides, offset) of a buffer of `size`, checked to stay inside:
// the contract's one bounds check (needle.contract.check_view), natively.
int64_t check_view(int64_t size, const Shape& shape, const Shape& strides, int64_t offset);

}  // namespace needle_cpu
