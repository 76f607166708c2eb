// SPDX-License-Identifier: MIT
/// @file tensor.hpp
/// @brief A minimal strided tensor: owning (shared storage) or a non-owning view of caller memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bn1d/error.hpp"
#include "bn1d/half.hpp"

namespace bn1d {

/// Element type of a Tensor. Float32 and Float64 are the types BatchNorm1d computes in;
/// Int64 exists for state dicts (num_batches_tracked). BFloat16 and Float16 (elements BFloat16
/// and Float16, half.hpp) are storage types for now: tensors and state files hold them, and the
/// compute entry points refuse them.
enum class DType { Float32, Float64, Int64, BFloat16, Float16 };

/// Sizes or strides of a tensor, in elements. Brace-initializable: `{N, C, L}`.
using Shape = std::vector<int64_t>;

/// Size of one element of @p dtype in bytes.
std::size_t element_size(DType dtype) noexcept;

/// Lower-case name of @p dtype: "float32", "float64", "int64", "bfloat16", "float16".
const char* dtype_name(DType dtype) noexcept;

/// The DType of C++ type T (float, double, int64_t).
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::Float32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::Float64;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::Int64;
}
template <>
constexpr DType dtype_of<BFloat16>() {
  return DType::BFloat16;
}
template <>
constexpr DType dtype_of<Float16>() {
  return DType::Float16;
}

/// A strided n-dimensional array of one DType.
///
/// Copies of a Tensor share its storage (like torch.Tensor); clone() makes an independent copy.
/// A Tensor made by from_blob() is a view of caller memory and does not own it: that memory must
/// outlive every Tensor (and every module call) that refers to it.
/// A default-constructed Tensor is *undefined* and plays the role of torch's None.
///
/// A view made by from_blob() of a `const` pointer is *read-only* (is_read_only()), and so are
/// its copies: bn1d reads it but never writes into it. Given as a result buffer (an output, a
/// gradient, statistics) it is replaced by a new tensor, as a buffer of the wrong shape is;
/// copy_from() into it, and a call that would update it in place (the running statistics of a
/// training forward), throw Error naming it. data() still returns a non-const pointer (constness
/// is shallow): the caller must not write through it.
class Tensor {
 public:
  /// An undefined tensor (torch's None).
  Tensor() = default;
  /// Copies share the storage.
  Tensor(const Tensor&) = default;
  /// Copy assignment, all or nothing: when it throws (out of memory for the sizes) this tensor is
  /// unchanged. It allocates nothing when this tensor had at least as many dimensions.
  Tensor& operator=(const Tensor& other);
  /// Moves the storage; the moved-from tensor is undefined, as a default-constructed one.
  Tensor(Tensor&& other) noexcept;
  /// Move assignment; @p other is left undefined (unless it is this tensor).
  Tensor& operator=(Tensor&& other) noexcept;
  ~Tensor() = default;

  /// A new contiguous tensor with uninitialized contents. Throws Error for negative or
  /// overflowing sizes and when the memory cannot be allocated.
  static Tensor empty(Shape sizes, DType dtype = DType::Float32);
  /// A new contiguous tensor filled with 0.
  static Tensor zeros(Shape sizes, DType dtype = DType::Float32);
  /// A new contiguous tensor filled with 1.
  static Tensor ones(Shape sizes, DType dtype = DType::Float32);
  /// A new contiguous tensor filled with @p value (rounded once to @p dtype; to Int64 truncated).
  static Tensor full(Shape sizes, double value, DType dtype = DType::Float32);
  /// Wraps caller memory without copying. @p strides are in elements, one per size, and may be
  /// zero or negative (@p ptr then points at the element with all indices 0). Throws Error on
  /// negative sizes, a stride count that differs from the size count, a null @p ptr for a
  /// non-empty tensor, or sizes/strides whose element offsets overflow int64.
  static Tensor from_blob(void* ptr, Shape sizes, Shape strides, DType dtype);
  /// Wraps contiguous (row-major) caller memory without copying.
  static Tensor from_blob(void* ptr, Shape sizes, DType dtype);
  /// Wraps read-only caller memory without copying: as from_blob(void*, Shape, Shape, DType),
  /// and the tensor is read-only (is_read_only()): bn1d never writes into it.
  static Tensor from_blob(const void* ptr, Shape sizes, Shape strides, DType dtype);
  /// Wraps contiguous (row-major) read-only caller memory without copying (is_read_only()).
  static Tensor from_blob(const void* ptr, Shape sizes, DType dtype);
  /// A null @p ptr (valid for a tensor without elements) wraps as a writable tensor; this
  /// overload resolves from_blob(nullptr, ...) between the two above.
  static Tensor from_blob(std::nullptr_t ptr, Shape sizes, Shape strides, DType dtype) {
    return from_blob(static_cast<void*>(ptr), std::move(sizes), std::move(strides), dtype);
  }
  /// from_blob(nullptr, sizes, strides, dtype) with row-major strides.
  static Tensor from_blob(std::nullptr_t ptr, Shape sizes, DType dtype) {
    return from_blob(static_cast<void*>(ptr), std::move(sizes), dtype);
  }

  /// False for a default-constructed tensor.
  bool defined() const noexcept { return defined_; }
  /// Element type.
  DType dtype() const noexcept { return dtype_; }
  /// Sizes, one per dimension.
  const Shape& sizes() const noexcept { return sizes_; }
  /// Strides in elements, one per dimension.
  const Shape& strides() const noexcept { return strides_; }
  /// Number of dimensions (0 for a scalar).
  int64_t dim() const noexcept { return static_cast<int64_t>(sizes_.size()); }
  /// Size of dimension @p d; negative @p d counts from the end. Throws Error when out of range.
  int64_t size(int64_t d) const;
  /// Number of elements (product of sizes; 1 for a scalar).
  int64_t numel() const noexcept { return numel_; }
  /// True when the strides are those of a row-major array of these sizes (dimensions of size 1
  /// may have any stride).
  bool is_contiguous() const noexcept;
  /// True for a view of read-only memory (from_blob() of a `const` pointer) and its copies: bn1d
  /// never writes into it. False for tensors bn1d allocates and for undefined ones.
  bool is_read_only() const noexcept { return read_only_; }

  /// Typed pointer to the element with all indices 0. Throws Error if undefined or if T does
  /// not match dtype(). Constness is shallow, as in torch: the data of a const Tensor may change.
  /// The data of a read-only tensor (is_read_only()) must only be read through it.
  template <class T>
  T* data() const {
    check_access(dtype_of<T>());
    return static_cast<T*>(data_);
  }
  /// Untyped pointer to the element with all indices 0 (nullptr when undefined).
  void* raw_data() const noexcept { return data_; }

  /// This tensor if it is contiguous, else a contiguous copy.
  Tensor contiguous() const;
  /// A contiguous copy with its own storage.
  Tensor clone() const;
  /// Copies the values of @p src into this tensor (same sizes and dtype, any strides on either
  /// side). Throws Error on a mismatch or when this tensor is read-only, before writing anything.
  /// The two may overlap (views of one memory): the result is then as if @p src were first copied
  /// to a temporary.
  void copy_from(const Tensor& src) const;

 private:
  void check_access(DType requested) const;

  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  DType dtype_ = DType::Float32;
  Shape sizes_;
  Shape strides_;
  int64_t numel_ = 0;
  bool defined_ = false;
  bool read_only_ = false;
};

/// A new contiguous tensor of standard-normal samples, reproducible from @p seed
/// (mt19937_64 and Box-Muller: identical on every platform), drawn in float64 and rounded once to
/// @p dtype: Float32, Float64, BFloat16 or Float16.
Tensor randn(Shape sizes, DType dtype = DType::Float32, uint64_t seed = 0);

}  // namespace bn1d
