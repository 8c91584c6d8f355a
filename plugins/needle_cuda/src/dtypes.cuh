// The dtypes of needle-cuda's handles and which kernel group takes which: one table
// (NEEDLE_DTYPES, NEEDLE_GROUPS) read by the kernels' dispatch, the launchers and the Python
// bindings (`__dtypes__`) alike. Free of Python so the CPU emulator compiles it too.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace needle_cuda {

// X(enumerator, C++ element type, contract name). bool is stored as one byte (C++ bool).
#define NEEDLE_DTYPES(X)        \
  X(Float32, float, "float32")  \
  X(Float64, double, "float64") \
  X(Int32, int32_t, "int32")    \
  X(Int64, int64_t, "int64")    \
  X(Bool, bool, "bool")

enum class DType : uint8_t {
#define NEEDLE_ENUM(e, type, name) e,
  NEEDLE_DTYPES(NEEDLE_ENUM)
#undef NEEDLE_ENUM
};

// Every dtype, in table order.
constexpr DType kDTypes[] = {
#define NEEDLE_LIST(e, type, name) DType::e,
    NEEDLE_DTYPES(NEEDLE_LIST)
#undef NEEDLE_LIST
};

// Sets of dtypes as bit masks.
constexpr unsigned bit(DType d) { return 1u << static_cast<unsigned>(d); }
constexpr unsigned kFloats = bit(DType::Float32) | bit(DType::Float64);
constexpr unsigned kNumbers = kFloats | bit(DType::Int32) | bit(DType::Int64);
constexpr unsigned kAll = kNumbers | bit(DType::Bool);

// X(group, dtypes): the contract's kernel groups (needle.contract.GROUPS) and the dtypes this
// backend's kernels of that group accept; published to Python as `__dtypes__`.
#define NEEDLE_GROUPS(X)  \
  X(memory, kAll)         \
  X(arithmetic, kNumbers) \
  X(compare, kNumbers)    \
  X(unary, kFloats)       \
  X(matmul, kNumbers)     \
  X(reduce, kNumbers)

// groups::memory, groups::arithmetic, ...: the masks the kernels of each group dispatch on.
namespace groups {
#define NEEDLE_GROUP_MASK(group, mask) constexpr unsigned group = mask;
NEEDLE_GROUPS(NEEDLE_GROUP_MASK)
#undef NEEDLE_GROUP_MASK
}  // namespace groups

inline const char* dtype_name(DType d) {
  switch (d) {
#define NEEDLE_NAME(e, type, name) \
  case DType::e:                   \
    return name;
    NEEDLE_DTYPES(NEEDLE_NAME)
#undef NEEDLE_NAME
  }
  return "?";
}

inline size_t itemsize(DType d) {
  switch (d) {
#define NEEDLE_SIZE(e, type, name) \
  case DType::e:                   \
    return sizeof(type);
    NEEDLE_DTYPES(NEEDLE_SIZE)
#undef NEEDLE_SIZE
  }
  return 0;
}

inline DType parse_dtype(const std::string& name) {
#define NEEDLE_PARSE(e, type, text) \
  if (name == text) return DType::e;
  NEEDLE_DTYPES(NEEDLE_PARSE)
#undef NEEDLE_PARSE
  throw std::invalid_argument("needle-cuda holds float32, float64, int32, int64 and bool, not '" +
                              name + "'");
}

template <typename T>
constexpr DType dtype_of() {
#define NEEDLE_OF(e, type, name) \
  if constexpr (std::is_same_v<T, type>) return DType::e;
  NEEDLE_DTYPES(NEEDLE_OF)
#undef NEEDLE_OF
}

template <typename T>
struct Tag {
  using type = T;
};

// f(Tag<T>{}) for the C++ type of `d` when `d` is in Mask, else std::invalid_argument naming the
// function and the dtype. Only the types of Mask are instantiated.
template <unsigned Mask, typename F>
void dispatch(DType d, const char* fn, F&& f) {
  switch (d) {
#define NEEDLE_CASE(e, type, name)               \
  case DType::e:                                 \
    if constexpr ((Mask & bit(DType::e)) != 0) { \
      f(Tag<type>{});                            \
      return;                                    \
    }                                            \
    break;
    NEEDLE_DTYPES(NEEDLE_CASE)
#undef NEEDLE_CASE
  }
  throw std::invalid_argument(std::string(fn) + " does not take " + dtype_name(d) + " arrays");
}

// Pure copies (compact, setitem, fill) move bits: one kernel per element width, not per dtype.
// WidthOf<T> is the unsigned integer as wide as T.
template <typename T>
using WidthOf = std::conditional_t<sizeof(T) == 1, uint8_t,
                                   std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;
static_assert(sizeof(WidthOf<double>) == 8 && sizeof(WidthOf<bool>) == 1, "element widths");

// f(Tag<WidthOf<T>>{}) for the C++ type T of `d`.
template <typename F>
void dispatch_width(DType d, F&& f) {
  dispatch<kAll>(d, "dispatch_width",
                 [&](auto tag) { f(Tag<WidthOf<typename decltype(tag)::type>>{}); });
}

// K elements moved as one aligned load/store (K * sizeof(T) <= 16 bytes).
template <typename T, int K>
struct alignas(sizeof(T) * K) Pack {
  T v[K];
};

}  // namespace needle_cuda
