// DLPack for needle-cuda's buffers: the C structs (written from the layout of the public header
// dlpack.h, v1.x), the producer behind the contract's to_dlpack and the consumer behind
// from_dlpack. Included by ndarray_cuda.cu after memory.cuh.
//
// Export: a view (shape, strides, offset) of a handle becomes a DLPackView; its __dlpack__ hands
// out a capsule whose DLTensor points at the buffer's start (`data`, 256-byte aligned) with the
// view's offset as `byte_offset` and its strides as they are (zero for broadcast views, negative
// for flips). The capsule's deleter holds the buffer, so it outlives the handle and the
// DLPackView. Import: a kDLCUDA producer on this device whose memory is one C-contiguous block is
// wrapped without a copy; its deleter runs when the last handle (or export) lets go.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memory.cuh"

namespace needle_cuda {
namespace dlpack {

namespace py = pybind11;

// --------------------------------------------------------------- the structs of dlpack.h

constexpr int32_t kDLCPU = 1;
constexpr int32_t kDLCUDA = 2;
constexpr uint8_t kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBool = 6;
constexpr uint64_t kFlagReadOnly = 1u << 0;
constexpr uint64_t kFlagIsCopied = 1u << 1;
constexpr uint32_t kMajor = 1, kMinor = 0;  // the version this code implements

struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; nullptr means C-contiguous
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};
struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
};
static_assert(sizeof(DLTensor) == 48 && offsetof(DLTensor, byte_offset) == 40, "DLTensor layout");
static_assert(sizeof(DLManagedTensor) == 64, "DLManagedTensor layout");
static_assert(offsetof(DLManagedTensorVersioned, dl_tensor) == 32, "DLManagedTensorVersioned");

constexpr const char* kLegacyName = "dltensor";
constexpr const char* kLegacyUsed = "used_dltensor";
constexpr const char* kVersionedName = "dltensor_versioned";
constexpr const char* kVersionedUsed = "used_dltensor_versioned";

[[noreturn]] inline void buffer_error(const std::string& msg) {
  PyErr_SetString(PyExc_BufferError, msg.c_str());
  throw py::error_already_set();
}

inline DLDataType to_dl(DType d) {
  switch (d) {
    case DType::Float32:
      return {kDLFloat, 32, 1};
    case DType::Float64:
      return {kDLFloat, 64, 1};
    case DType::Int32:
      return {kDLInt, 32, 1};
    case DType::Int64:
      return {kDLInt, 64, 1};
    case DType::Bool:
      return {kDLBool, 8, 1};
  }
  return {};
}

inline DType from_dl(DLDataType t) {
  for (DType d : kDTypes) {
    const DLDataType want = to_dl(d);
    if (t.code == want.code && t.bits == want.bits && t.lanes == 1) return d;
  }
  buffer_error(
      "needle-cuda holds float32, float64, int32, int64 and bool, not DLPack dtype (code " +
      std::to_string(t.code) + ", bits " + std::to_string(t.bits) + ", lanes " +
      std::to_string(t.lanes) + ")");
}

inline int current_device() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

// --------------------------------------------------------------------------------- export

// What a capsule's tensor owns: the buffer and the shape and strides its DLTensor points at.
struct ExportContext {
  std::shared_ptr<Buffer> buffer;
  std::vector<int64_t> shape, strides;
};

template <typename Managed>
void delete_export(Managed* self) {  // any thread, GIL or not: touches no Python object
  delete static_cast<ExportContext*>(self->manager_ctx);
  delete self;
}

// A capsule that was never consumed frees its tensor; a consumed one ("used_...") is the
// consumer's to free.
template <typename Managed>
void capsule_destructor(PyObject* capsule) {
  const char* name = std::is_same_v<Managed, DLManagedTensor> ? kLegacyName : kVersionedName;
  if (PyCapsule_IsValid(capsule, name)) {
    auto* managed = static_cast<Managed*>(PyCapsule_GetPointer(capsule, name));
    managed->deleter(managed);
  }
}

// The object to_dlpack returns: a view of a buffer that speaks the array API's DLPack protocol.
class DLPackView {
 public:
  DLPackView(const CudaArray& a, const Dims& shape, const Dims& strides, int64_t offset)
      : buffer_(a.buffer()), dtype_(a.dtype()), shape_(shape), strides_(strides), offset_(offset) {
    view_ = make_view("to_dlpack", a.size(), shape, strides, offset);
    device_ = buffer_ ? buffer_->device() : current_device();
  }

  py::tuple dlpack_device() const { return py::make_tuple(kDLCUDA, device_); }

  // The array API's __dlpack__(*, stream, max_version, dl_device, copy).
  py::object dlpack(py::object stream, py::object max_version, py::object dl_device,
                    py::object copy) const {
    if (!dl_device.is_none()) {
      const auto want = dl_device.cast<std::pair<int, int>>();
      if (want.first != kDLCUDA || want.second != device_)
        buffer_error("needle-cuda exports to its own device (" + std::to_string(kDLCUDA) + ", " +
                     std::to_string(device_) + ") only, not to (" + std::to_string(want.first) +
                     ", " + std::to_string(want.second) + "); use to_numpy for a host copy");
    }
    const cudaStream_t consumer = consumer_stream(stream);
    const bool copied = !copy.is_none() && copy.cast<bool>();
    const bool versioned =
        !max_version.is_none() && max_version.cast<std::pair<int, int>>().first >= 1;
    auto ctx = std::make_unique<ExportContext>();
    ctx->shape.assign(shape_.begin(), shape_.end());
    DLTensor t{};
    t.device = {kDLCUDA, device_};
    t.ndim = static_cast<int32_t>(shape_.size());
    t.dtype = to_dl(dtype_);
    if (copied) {  // a dense copy of the view, C-contiguous
      const size_t bytes = static_cast<size_t>(view_.numel) * itemsize(dtype_);
      if (bytes > 0) {
        ctx->buffer = std::make_shared<Buffer>(bytes, "cudaMalloc (__dlpack__ copy)");
        dispatch_width(dtype_, [&](auto tag) {
          using U = typename decltype(tag)::type;
          launch_compact(static_cast<const U*>(buffer_->ptr()), static_cast<U*>(ctx->buffer->ptr()),
                         view_);
        });
      }
    } else {
      ctx->buffer = buffer_;
      ctx->strides.assign(strides_.begin(), strides_.end());
      t.byte_offset = static_cast<uint64_t>(offset_) * itemsize(dtype_);
    }
    wait_for_us(consumer);  // after the copy's kernel, if any
    t.data = ctx->buffer ? ctx->buffer->ptr() : nullptr;
    t.shape = ctx->shape.empty() ? nullptr : ctx->shape.data();
    t.strides = ctx->strides.empty() ? nullptr : ctx->strides.data();
    if (versioned) {
      auto* managed = new DLManagedTensorVersioned{};
      managed->version = {kMajor, kMinor};
      managed->flags = (copied ? kFlagIsCopied : 0) | (!copied && broadcast() ? kFlagReadOnly : 0);
      managed->dl_tensor = t;
      managed->manager_ctx = ctx.release();
      managed->deleter = &delete_export<DLManagedTensorVersioned>;
      return capsule(managed, kVersionedName, &capsule_destructor<DLManagedTensorVersioned>);
    }
    auto* managed = new DLManagedTensor{};
    managed->dl_tensor = t;
    managed->manager_ctx = ctx.release();
    managed->deleter = &delete_export<DLManagedTensor>;
    return capsule(managed, kLegacyName, &capsule_destructor<DLManagedTensor>);
  }

 private:
  // A broadcast view (a zero stride over more than one element) is exported read-only.
  bool broadcast() const {
    for (size_t d = 0; d < shape_.size(); ++d)
      if (strides_[d] == 0 && shape_[d] > 1) return true;
    return false;
  }

  // The array API's CUDA streams: None or 1 is the legacy default stream (ours: nothing to
  // order), 2 the per-thread default stream, -1 asks for no synchronisation, other integers
  // are a cudaStream_t. nullptr: nothing to do.
  static cudaStream_t consumer_stream(const py::object& stream) {
    if (stream.is_none()) return nullptr;
    const auto value = stream.cast<int64_t>();
    if (value == 0)
      throw std::invalid_argument("__dlpack__: stream=0 is ambiguous for CUDA (use 1 or 2)");
    if (value == 1 || value == -1) return nullptr;
    return value == 2 ? cudaStreamPerThread : reinterpret_cast<cudaStream_t>(value);
  }

  // Make the consumer's stream wait for every kernel we queued so far.
  static void wait_for_us(cudaStream_t consumer) {
    if (consumer == nullptr) return;
    cudaEvent_t event;
    check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate (__dlpack__)");
    cudaError_t err = cudaEventRecord(event, cudaStreamLegacy);
    if (err == cudaSuccess) err = cudaStreamWaitEvent(consumer, event, 0);
    cudaEventDestroy(event);
    check(err, "making the consumer's stream wait (__dlpack__)");
  }

  template <typename Managed>
  static py::object capsule(Managed* managed, const char* name, void (*destructor)(PyObject*)) {
    PyObject* cap = PyCapsule_New(managed, name, destructor);
    if (cap == nullptr) {
      managed->deleter(managed);
      throw py::error_already_set();
    }
    return py::reinterpret_steal<py::object>(cap);
  }

  std::shared_ptr<Buffer> buffer_;
  DType dtype_;
  Dims shape_, strides_;
  int64_t offset_;
  View view_{};
  int device_ = 0;
};

// --------------------------------------------------------------------------------- import

// The handle for a DLTensor that `consume` accepts (size, dtype), or BufferError saying why not.
inline std::pair<int64_t, DType> check_importable(const DLTensor& t) {
  const DType dtype = from_dl(t.dtype);
  if (t.device.device_type != kDLCUDA)
    buffer_error("needle-cuda imports CUDA memory (DLPack device type " + std::to_string(kDLCUDA) +
                 "), not device type " + std::to_string(t.device.device_type));
  const int dev = current_device();
  if (t.device.device_id != dev)
    buffer_error("the producer's memory is on CUDA device " + std::to_string(t.device.device_id) +
                 ", needle-cuda runs on device " + std::to_string(dev));
  if (t.ndim < 0) buffer_error("DLPack tensor with ndim " + std::to_string(t.ndim));
  int64_t numel = 1;
  for (int d = 0; d < t.ndim; ++d) {
    if (t.shape[d] < 0) buffer_error("DLPack tensor with a negative dimension");
    if (t.shape[d] != 0 && numel > std::numeric_limits<int64_t>::max() / t.shape[d])
      buffer_error("DLPack tensor too large");
    numel *= t.shape[d];
  }
  if (t.strides != nullptr && numel > 0) {  // C-contiguous, ignoring dimensions of one element
    int64_t expect = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      if (t.shape[d] != 1 && t.strides[d] != expect)
        buffer_error(
            "the producer's memory is not one C-contiguous block (shape and strides "
            "of a view): make it contiguous first");
      expect *= t.shape[d];
    }
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(t.data) + t.byte_offset;
  if (numel > 0 && start % itemsize(dtype) != 0)
    buffer_error("the producer's data is not aligned to its element size");
  return {numel, dtype};
}

// Take ownership of a capsule's tensor: a handle sharing its memory, whose buffer calls the
// producer's deleter when the last user lets go, and the tensor's shape.
using Imported = std::pair<CudaArray*, std::vector<int64_t>>;

template <typename Managed>
Imported adopt(PyObject* cap, const char* name, const char* used) {
  auto* managed = static_cast<Managed*>(PyCapsule_GetPointer(cap, name));
  if (managed == nullptr) throw py::error_already_set();
  if constexpr (std::is_same_v<Managed, DLManagedTensorVersioned>) {
    if (managed->version.major != kMajor)
      buffer_error("DLPack version " + std::to_string(managed->version.major) + "." +
                   std::to_string(managed->version.minor) + " is not 1.x");
    if (managed->flags & kFlagReadOnly)
      buffer_error("the producer's memory is read-only; needle arrays are writable");
  }
  const DLTensor& t = managed->dl_tensor;
  const auto [numel, dtype] = check_importable(t);
  std::vector<int64_t> shape(t.shape, t.shape + t.ndim);
  auto give_back = [managed] {
    if (managed->deleter != nullptr) managed->deleter(managed);
  };
  if (PyCapsule_SetName(cap, used) != 0) throw py::error_already_set();  // ours from here on
  std::shared_ptr<Buffer> buffer;
  if (numel == 0) {
    give_back();  // nothing to share
  } else {
    void* data = static_cast<char*>(t.data) + t.byte_offset;
    try {
      buffer = std::make_shared<Buffer>(data, static_cast<size_t>(numel) * itemsize(dtype),
                                        t.device.device_id, give_back);
    } catch (...) {
      give_back();
      throw;
    }
  }
  return {new CudaArray(numel, dtype, std::move(buffer)), std::move(shape)};
}

// from_dlpack(obj): obj has __dlpack__ (and __dlpack_device__), or is a DLPack capsule.
// Returns the handle and the producer's shape (the contract's `(handle, shape)`).
inline py::tuple consume(py::object obj) {
  py::object cap = obj;
  if (!PyCapsule_CheckExact(obj.ptr())) {
    if (!py::hasattr(obj, "__dlpack__"))
      throw py::type_error("from_dlpack needs an object with __dlpack__ or a DLPack capsule, not " +
                           std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    if (py::hasattr(obj, "__dlpack_device__")) {
      const auto where = obj.attr("__dlpack_device__")().cast<std::pair<int, int>>();
      if (where.first != kDLCUDA)
        buffer_error("needle-cuda imports CUDA memory (DLPack device type " +
                     std::to_string(kDLCUDA) + "), the producer is on device type " +
                     std::to_string(where.first) + "; copy it in with from_numpy");
    }
    // stream=1: we run on the legacy default stream, so the producer orders its work before it.
    try {
      cap = obj.attr("__dlpack__")(py::arg("stream") = 1,
                                   py::arg("max_version") = py::make_tuple(kMajor, kMinor));
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_TypeError)) throw;  // a producer from before max_version
      cap = obj.attr("__dlpack__")(py::arg("stream") = 1);
    }
  }
  Imported got;
  if (PyCapsule_IsValid(cap.ptr(), kVersionedName))
    got = adopt<DLManagedTensorVersioned>(cap.ptr(), kVersionedName, kVersionedUsed);
  else if (PyCapsule_IsValid(cap.ptr(), kLegacyName))
    got = adopt<DLManagedTensor>(cap.ptr(), kLegacyName, kLegacyUsed);
  else
    buffer_error("not an unused DLPack capsule (named 'dltensor' or 'dltensor_versioned')");
  py::object handle = py::cast(got.first, py::return_value_policy::take_ownership);
  return py::make_tuple(handle, py::tuple(py::cast(got.second)));
}

}  // namespace dlpack
}  // namespace needle_cuda
