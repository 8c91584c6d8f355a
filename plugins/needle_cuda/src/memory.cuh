// Device memory and handles of needle-cuda: the caching allocator (DeviceMemory), the buffers it
// hands out or that DLPack producers lend (Buffer), and the handle Python sees (CudaArray).
// Free of Python; included by ndarray_cuda.cu after kernels.cuh.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dtypes.cuh"
#include "kernels.cuh"

namespace needle_cuda {

// Freed buffers are kept for reuse, by size rounded up (512 B below 1 MiB, else 2 MiB), up to
// NEEDLE_CUDA_CACHE_MB megabytes (default 2048; 0 turns the cache off). Why: cudaFree waits for
// the whole device, so freeing each temporary would stall the host on every op. Reuse is safe
// because every kernel and copy runs on the one default stream, in order. When cudaMalloc
// runs out of memory the cache is emptied and the allocation tried once more.
class DeviceMemory {
 public:
  static DeviceMemory& instance() {
    static DeviceMemory* memory = new DeviceMemory();  // never destroyed: outlives every Array
    return *memory;
  }

  void* allocate(size_t bytes, const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t size = rounded(bytes);
    void* ptr = nullptr;
    auto bin = free_.find(size);
    if (bin != free_.end() && !bin->second.empty()) {
      ptr = bin->second.back();
      bin->second.pop_back();
      cached_ -= size;
      ++hits_;
    } else {
      cudaError_t err = cudaMalloc(&ptr, size);
      if (err == cudaErrorMemoryAllocation && cached_ > 0) {
        cudaGetLastError();
        empty_locked();
        err = cudaMalloc(&ptr, size);
      }
      check(err, what);
      ++misses_;
    }
    in_use_ += size;
    peak_ = std::max(peak_, in_use_);
    return ptr;
  }

  void release(void* ptr, size_t bytes) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t size = rounded(bytes);
    in_use_ -= size;
    if (cached_ + size <= limit_) {
      try {
        free_[size].push_back(ptr);
        cached_ += size;
        return;
      } catch (...) {  // no memory for the bookkeeping: free it for real
      }
    }
    cudaFree(ptr);  // errors ignored: called from destructors
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    empty_locked();
  }

  // The counters of memory_stats(), in bytes (rounded sizes) and counts.
  std::map<std::string, int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {{"allocated_bytes", static_cast<int64_t>(in_use_)},
            {"peak_allocated_bytes", static_cast<int64_t>(peak_)},
            {"cached_bytes", static_cast<int64_t>(cached_)},
            {"cache_limit_bytes", static_cast<int64_t>(limit_)},
            {"cache_hits", hits_},
            {"cache_misses", misses_}};
  }

 private:
  DeviceMemory() {
    const char* env = std::getenv("NEEDLE_CUDA_CACHE_MB");
    const long long mb = env != nullptr ? std::atoll(env) : 2048;
    limit_ = mb > 0 ? static_cast<size_t>(mb) << 20 : 0;
  }
  static size_t rounded(size_t bytes) {
    const size_t quantum = bytes < (size_t{1} << 20) ? 512 : (size_t{2} << 20);
    return (bytes + quantum - 1) / quantum * quantum;
  }
  void empty_locked() {
    for (auto& bin : free_)
      for (void* ptr : bin.second) cudaFree(ptr);
    free_.clear();
    cached_ = 0;
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0, limit_ = 0, in_use_ = 0, peak_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

// Device memory shared by handles and DLPack exports: returned to DeviceMemory when the last of
// them lets go, or, for memory lent by a DLPack producer, handed back through `give_back` (which
// calls the producer's deleter).
class Buffer {
 public:
  Buffer(size_t bytes, const std::string& what)
      : ptr_(DeviceMemory::instance().allocate(bytes, what)), bytes_(bytes) {
    cudaGetDevice(&device_);  // cannot fail once cudaMalloc has succeeded
  }
  Buffer(void* ptr, size_t bytes, int device, std::function<void()> give_back)
      : ptr_(ptr), bytes_(bytes), device_(device), give_back_(std::move(give_back)) {}
  ~Buffer() {
    if (give_back_) {
      give_back_();
    } else {
      DeviceMemory::instance().release(ptr_, bytes_);
    }
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }

 private:
  void* ptr_;
  size_t bytes_;
  int device_ = 0;
  std::function<void()> give_back_;
};

// The handle of the contract: `size` elements of `dtype` in a Buffer (none when size is 0).
class CudaArray {
 public:
  CudaArray(int64_t size, DType dtype) : size_(size), dtype_(dtype) {
    if (size < 0)
      throw std::invalid_argument("Array size must be >= 0, got " + std::to_string(size));
    const int64_t item = static_cast<int64_t>(itemsize(dtype));
    if (size > std::numeric_limits<int64_t>::max() / item)
      throw std::invalid_argument("Array size " + std::to_string(size) + " is too large");
    if (size == 0) return;
    const size_t bytes = static_cast<size_t>(size * item);
    buffer_ = std::make_shared<Buffer>(bytes, "cudaMalloc of " + std::to_string(bytes) +
                                                  " bytes (Array(" + std::to_string(size) + ", " +
                                                  dtype_name(dtype) + "))");
  }
  CudaArray(int64_t size, DType dtype, std::shared_ptr<Buffer> buffer)
      : buffer_(std::move(buffer)), size_(size), dtype_(dtype) {}
  CudaArray(const CudaArray&) = delete;
  CudaArray& operator=(const CudaArray&) = delete;

  void* raw() const {
    if (freed_) throw std::invalid_argument("this cuda Array was freed");
    return buffer_ ? buffer_->ptr() : nullptr;
  }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  int64_t size() const { return size_; }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return static_cast<size_t>(size_) * itemsize(dtype_); }
  uintptr_t address() const { return reinterpret_cast<uintptr_t>(raw()); }
  // The memory, shared with whoever keeps it (a DLPack export); nullptr for an empty Array.
  const std::shared_ptr<Buffer>& buffer() const {
    raw();  // raises once freed
    return buffer_;
  }
  // Drop this handle's hold on the memory now; an export still using it keeps it until done.
  void release() noexcept {
    freed_ = true;
    buffer_.reset();
  }

 private:
  std::shared_ptr<Buffer> buffer_;
  int64_t size_ = 0;
  DType dtype_;
  bool freed_ = false;
};

// True when the memory of x and y overlaps (an output that overlaps an input is computed into a
// temporary where the kernel would read what it already wrote).
inline bool overlaps(const CudaArray& x, const CudaArray& y) {
  const auto* p = static_cast<const char*>(x.raw());
  const auto* q = static_cast<const char*>(y.raw());
  return x.nbytes() > 0 && y.nbytes() > 0 && p < q + y.nbytes() && q < p + x.nbytes();
}

}  // namespace needle_cuda
