// SPDX-License-Identifier: MIT
// Tensor: storage, views, copies and the seeded randn.
#include "bn1d/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "channel_values.hpp"
#include "format.hpp"

namespace bn1d {
namespace {

constexpr double kPi = 3.14159265358979323846;

int64_t checked_numel(const Shape& sizes) {
  int64_t n = 1;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0) {
      throw Error("tensor sizes must be non-negative, got size " + std::to_string(sizes[d]) +
                  " in dimension " + std::to_string(d) + " of " + format_shape(sizes));
    }
    if (__builtin_mul_overflow(n, sizes[d], &n)) {
      throw Error("tensor sizes " + format_shape(sizes) + " have more elements than int64 holds");
    }
  }
  return n;
}

// Row-major strides. An empty tensor's sizes may multiply past int64 (e.g. [0, 2^40, 2^40]),
// which no stride can describe: that is an Error too.
Shape contiguous_strides(const Shape& sizes) {
  Shape strides(sizes.size());
  int64_t s = 1;
  for (std::size_t d = sizes.size(); d-- > 0;) {
    strides[d] = s;
    if (d > 0 && __builtin_mul_overflow(s, std::max<int64_t>(sizes[d], 1), &s)) {
      throw Error("tensor sizes " + format_shape(sizes) + " need strides beyond the int64 range");
    }
  }
  return strides;
}

// Offset in elements of the element with the given flat row-major index.
int64_t offset_of(int64_t flat, const Shape& sizes, const Shape& strides) {
  int64_t off = 0;
  for (std::size_t d = sizes.size(); d-- > 0;) {
    off += (flat % sizes[d]) * strides[d];
    flat /= sizes[d];
  }
  return off;
}

// Storage of a tensor: 64-byte aligned (a cache line, an AVX-512 vector), so that the kernels can
// stream whole lines. Tensors of kHugeMinBytes or more are aligned to 2 MiB and marked for
// transparent huge pages (Linux, THP "madvise" or "always"): streaming them then takes ~500×
// fewer TLB misses (measured: channels-last eval of 64 MiB, one thread, 12 % faster). The
// rounding up to whole 2 MiB pages wastes at most 1/8 of such a tensor.
constexpr std::size_t kHugePage = std::size_t{2} << 20;
constexpr std::size_t kHugeMinBytes = std::size_t{16} << 20;

void* allocate_storage(std::size_t bytes) {
  const std::size_t align = bytes >= kHugeMinBytes ? kHugePage : 64;
  if (bytes > SIZE_MAX - align) return nullptr;
  const std::size_t size = (std::max<std::size_t>(bytes, 1) + align - 1) / align * align;
  void* p = std::aligned_alloc(align, size);
#ifdef MADV_HUGEPAGE
  if (p != nullptr && align == kHugePage) madvise(p, size, MADV_HUGEPAGE);  // a hint: may fail
#endif
  return p;
}

// Writes @p value, rounded once to @p dtype (to Int64: truncated), as element @p i of @p data.
void store_rounded(void* data, DType dtype, int64_t i, double value) {
  switch (dtype) {
    case DType::Float32:
      static_cast<float*>(data)[i] = static_cast<float>(value);
      return;
    case DType::Float64:
      static_cast<double*>(data)[i] = value;
      return;
    case DType::Int64:
      // The cast is defined only for values whose truncation fits int64: [-2^63, 2^63).
      if (!(value >= -0x1p63 && value < 0x1p63)) {
        throw Error("value: expected a number representable as int64, got " +
                    python_float_repr(value));
      }
      static_cast<int64_t*>(data)[i] = static_cast<int64_t>(value);
      return;
    case DType::BFloat16:
      static_cast<BFloat16*>(data)[i] = to_bfloat16(value);
      return;
    case DType::Float16:
      static_cast<Float16*>(data)[i] = to_float16(value);
      return;
  }
  throw Error("unknown dtype " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace

std::size_t element_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::Float32:
      return 4;
    case DType::Float64:
    case DType::Int64:
      return 8;
    case DType::BFloat16:
    case DType::Float16:
      return 2;
  }
  return 8;
}

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::Float32:
      return "float32";
    case DType::Float64:
      return "float64";
    case DType::Int64:
      return "int64";
    case DType::BFloat16:
      return "bfloat16";
    case DType::Float16:
      return "float16";
  }
  return "unknown";
}

Tensor::Tensor(Tensor&& other) noexcept
    : storage_(std::move(other.storage_)),
      data_(std::exchange(other.data_, nullptr)),
      dtype_(std::exchange(other.dtype_, DType::Float32)),
      sizes_(std::move(other.sizes_)),
      strides_(std::move(other.strides_)),
      numel_(std::exchange(other.numel_, 0)),
      defined_(std::exchange(other.defined_, false)),
      read_only_(std::exchange(other.read_only_, false)) {
  other.sizes_.clear();
  other.strides_.clear();
}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this == &other) return *this;
  if (sizes_.capacity() < other.sizes_.size() || strides_.capacity() < other.strides_.size()) {
    Tensor copy(other);  // may throw: this tensor is unchanged
    return *this = std::move(copy);
  }
  sizes_ = other.sizes_;  // within capacity: no allocation, cannot throw
  strides_ = other.strides_;
  storage_ = other.storage_;
  data_ = other.data_;
  dtype_ = other.dtype_;
  numel_ = other.numel_;
  defined_ = other.defined_;
  read_only_ = other.read_only_;
  return *this;
}

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this != &other) {
    storage_ = std::move(other.storage_);
    data_ = std::exchange(other.data_, nullptr);
    dtype_ = std::exchange(other.dtype_, DType::Float32);
    sizes_ = std::move(other.sizes_);
    strides_ = std::move(other.strides_);
    numel_ = std::exchange(other.numel_, 0);
    defined_ = std::exchange(other.defined_, false);
    read_only_ = std::exchange(other.read_only_, false);
    other.storage_.reset();
    other.sizes_.clear();
    other.strides_.clear();
  }
  return *this;
}

Tensor Tensor::empty(Shape sizes, DType dtype) {
  Tensor t;
  t.numel_ = checked_numel(sizes);
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<std::size_t>(t.numel_), element_size(dtype), &bytes)) {
    throw Error("tensor sizes " + format_shape(sizes) + " need more bytes than size_t holds");
  }
  void* p = allocate_storage(bytes);
  if (p == nullptr) {
    throw Error("cannot allocate " + std::to_string(bytes) + " bytes for a " + dtype_name(dtype) +
                " tensor of sizes " + format_shape(sizes));
  }
  t.storage_ = std::shared_ptr<void>(p, std::free);
  t.data_ = p;
  t.dtype_ = dtype;
  t.strides_ = contiguous_strides(sizes);
  t.sizes_ = std::move(sizes);
  t.defined_ = true;
  return t;
}

Tensor Tensor::full(Shape sizes, double value, DType dtype) {
  Tensor t = empty(std::move(sizes), dtype);
  if (t.numel_ == 0) return t;
  store_rounded(t.data_, dtype, 0, value);  // the rounded value once, then copies of its bytes
  const std::size_t esize = element_size(dtype);
  auto* bytes = static_cast<char*>(t.data_);
  for (int64_t i = 1; i < t.numel_; ++i) std::memcpy(bytes + i * esize, bytes, esize);
  return t;
}

Tensor Tensor::zeros(Shape sizes, DType dtype) { return full(std::move(sizes), 0.0, dtype); }
Tensor Tensor::ones(Shape sizes, DType dtype) { return full(std::move(sizes), 1.0, dtype); }

Tensor Tensor::from_blob(void* ptr, Shape sizes, Shape strides, DType dtype) {
  if (strides.size() != sizes.size()) {
    throw Error("from_blob: expected one stride per dimension (" + std::to_string(sizes.size()) +
                "), got " + std::to_string(strides.size()) + " strides");
  }
  Tensor t;
  t.numel_ = checked_numel(sizes);
  if (t.numel_ > 0) {
    if (ptr == nullptr) {
      throw Error("from_blob: got a null pointer for a tensor of sizes " + format_shape(sizes));
    }
    // The largest distance from element 0, in bytes, must fit in int64.
    int64_t extent = 0;
    for (std::size_t d = 0; d < sizes.size(); ++d) {
      int64_t span = 0;
      if (strides[d] == INT64_MIN ||
          __builtin_mul_overflow(sizes[d] - 1, std::abs(strides[d]), &span) ||
          __builtin_add_overflow(extent, span, &extent)) {
        throw Error("from_blob: sizes " + format_shape(sizes) + " with strides " +
                    format_shape(strides) + " address beyond the int64 range");
      }
    }
    int64_t bytes = 0;
    if (__builtin_mul_overflow(extent, static_cast<int64_t>(element_size(dtype)), &bytes)) {
      throw Error("from_blob: sizes " + format_shape(sizes) + " with strides " +
                  format_shape(strides) + " address beyond the int64 range");
    }
  }
  t.data_ = ptr;
  t.dtype_ = dtype;
  t.sizes_ = std::move(sizes);
  t.strides_ = std::move(strides);
  t.defined_ = true;
  return t;
}

Tensor Tensor::from_blob(void* ptr, Shape sizes, DType dtype) {
  checked_numel(sizes);
  Shape strides = contiguous_strides(sizes);
  return from_blob(ptr, std::move(sizes), std::move(strides), dtype);
}

Tensor Tensor::from_blob(const void* ptr, Shape sizes, Shape strides, DType dtype) {
  // The memory is never written through this tensor: read_only_ makes bn1d replace it as a result
  // and refuse it as a destination.
  Tensor t = from_blob(const_cast<void*>(ptr), std::move(sizes), std::move(strides), dtype);
  t.read_only_ = true;
  return t;
}

Tensor Tensor::from_blob(const void* ptr, Shape sizes, DType dtype) {
  Tensor t = from_blob(const_cast<void*>(ptr), std::move(sizes), dtype);
  t.read_only_ = true;
  return t;
}

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  const int64_t i = d < 0 ? d + n : d;
  if (i < 0 || i >= n) {
    throw Error("size: dimension " + std::to_string(d) + " out of range for a " +
                std::to_string(n) + "-D tensor");
  }
  return sizes_[static_cast<std::size_t>(i)];
}

bool Tensor::is_contiguous() const noexcept {
  int64_t expected = 1;
  for (std::size_t d = sizes_.size(); d-- > 0;) {
    if (sizes_[d] == 0) return true;
    if (sizes_[d] != 1 && strides_[d] != expected) return false;
    expected *= sizes_[d];
  }
  return true;
}

void Tensor::check_access(DType requested) const {
  if (!defined_) throw Error("data: the tensor is undefined");
  if (requested != dtype_) {
    throw Error(std::string("data: requested ") + dtype_name(requested) + " from a " +
                dtype_name(dtype_) + " tensor");
  }
}

Tensor Tensor::contiguous() const {
  if (!defined_ || is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  if (!defined_) return {};
  Tensor out = empty(sizes_, dtype_);
  out.copy_from(*this);
  return out;
}

void Tensor::copy_from(const Tensor& src) const {
  if (!defined_ || !src.defined_) throw Error("copy_from: both tensors must be defined");
  if (read_only_) {
    throw Error(
        "copy_from: the destination is read-only (from_blob of const memory); bn1d does not "
        "write into it");
  }
  if (src.sizes_ != sizes_ || src.dtype_ != dtype_) {
    throw Error(std::string("copy_from: expected a ") + dtype_name(dtype_) + " tensor of sizes " +
                format_shape(sizes_) + ", got a " + dtype_name(src.dtype_) + " tensor of sizes " +
                format_shape(src.sizes_));
  }
  const std::size_t esize = element_size(dtype_);
  if (numel_ == 0) return;
  if (!(is_contiguous() && src.is_contiguous()) && detail::overlaps(*this, src)) {
    // Element-wise copying between overlapping strided views would read values it has already
    // overwritten: copy through a temporary (contiguous, so the copy below is a memmove).
    const Tensor tmp = src.clone();
    copy_from(tmp);
    return;
  }
  if (is_contiguous() && src.is_contiguous()) {
    std::memmove(data_, src.data_, static_cast<std::size_t>(numel_) * esize);
    return;
  }
  auto* dst_bytes = static_cast<char*>(data_);
  const auto* src_bytes = static_cast<const char*>(src.data_);
  for (int64_t i = 0; i < numel_; ++i) {
    std::memcpy(dst_bytes + offset_of(i, sizes_, strides_) * static_cast<int64_t>(esize),
                src_bytes + offset_of(i, src.sizes_, src.strides_) * static_cast<int64_t>(esize),
                esize);
  }
}

Tensor randn(Shape sizes, DType dtype, uint64_t seed) {
  if (dtype == DType::Int64) {
    throw Error("randn: expected dtype float32, float64, bfloat16 or float16, got int64");
  }
  Tensor t = Tensor::empty(std::move(sizes), dtype);
  std::mt19937_64 gen(seed);
  // Uniform in (0, 1]: 53 random bits, never 0 so that log() is finite.
  auto uniform = [&gen] { return (static_cast<double>(gen() >> 11) + 1.0) * 0x1.0p-53; };
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double theta = 2.0 * kPi * uniform();
    const double z[2] = {r * std::cos(theta), r * std::sin(theta)};
    for (int64_t k = 0; k < 2 && i + k < n; ++k) store_rounded(t.raw_data(), dtype, i + k, z[k]);
  }
  return t;
}

}  // namespace bn1d
