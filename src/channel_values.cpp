// SPDX-License-Identifier: MIT
#include "channel_values.hpp"

#include <algorithm>
#include <array>
#include <span>
#include <vector>

namespace bn1d::detail {
namespace {

// Byte range [first, last) that a tensor's elements can touch.
std::pair<const char*, const char*> byte_range(const Tensor& t) {
  const auto* base = static_cast<const char*>(t.raw_data());
  int64_t lo = 0, hi = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t span = (t.sizes()[d] - 1) * t.strides()[d];
    (span < 0 ? lo : hi) += span;
  }
  const auto esize = static_cast<int64_t>(element_size(t.dtype()));
  return {base + lo * esize, base + (hi + 1) * esize};
}

bool overlaps(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.numel() == 0 || b.numel() == 0) return false;
  const auto [a0, a1] = byte_range(a);
  const auto [b0, b1] = byte_range(b);
  return a0 < b1 && b0 < a1;
}

}  // namespace

void check_optional_param(const Tensor& t, const char* name, int64_t C, DType dtype) {
  if (t.defined()) check_channel_tensor(t, name, C, dtype);
}

static bool reusable(const Tensor& t, std::span<const int64_t> sizes, DType dtype,
              std::initializer_list<const Tensor*> avoid) {
  bool ok = t.defined() && std::equal(sizes.begin(), sizes.end(), t.sizes().begin(), t.sizes().end()) &&
            t.dtype() == dtype && t.is_contiguous();
  for (const Tensor* other : avoid) ok = ok && !overlaps(t, *other);
  return ok;
}

void reuse_or_allocate(Tensor& t, const Shape& sizes, DType dtype,
                       std::initializer_list<const Tensor*> avoid) {
  if (!reusable(t, sizes, dtype, avoid)) t = Tensor::empty(sizes, dtype);
}

void reuse_or_allocate(Tensor& t, int64_t C, DType dtype, std::initializer_list<const Tensor*> avoid) {
  if (!reusable(t, std::span<const int64_t>(&C, 1), dtype, avoid)) t = Tensor::empty({C}, dtype);
}

double* scratch(int slot, std::size_t n) {
  thread_local std::array<std::vector<double>, 4> buffers;
  std::vector<double>& b = buffers[static_cast<std::size_t>(slot)];
  if (b.size() < n) b.resize(n);
  return b.data();
}

}  // namespace bn1d::detail
