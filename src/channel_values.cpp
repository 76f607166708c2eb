// SPDX-License-Identifier: MIT
#include "channel_values.hpp"

#include <algorithm>
#include <array>
#include <span>
#include <utility>
#include <vector>

#include "route.hpp"

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

}  // namespace

bool overlaps(const Tensor& a, const Tensor& b) noexcept {
  if (!a.defined() || !b.defined() || a.numel() == 0 || b.numel() == 0) return false;
  const auto [a0, a1] = byte_range(a);
  const auto [b0, b1] = byte_range(b);
  return a0 < b1 && b0 < a1;
}

void load_channels(double* out, const Tensor& t) {
  const int64_t C = t.numel();
  if (t.is_contiguous()) return route::to_f64(out, t.raw_data(), t.dtype(), C);
  const ChannelValues v(t, 0.0);
  for (int64_t c = 0; c < C; ++c) out[c] = v[c];
}

const double* channel_f64(const Tensor& t, std::vector<double>& storage) {
  if (!t.defined()) return nullptr;
  if (t.dtype() == DType::Float64 && t.is_contiguous()) return t.data<double>();
  if (storage.size() < static_cast<std::size_t>(t.numel()))
    storage.resize(static_cast<std::size_t>(t.numel()));
  double* out = storage.data();
  load_channels(out, t);
  return out;
}

void store_channels(const Tensor& t, const double* v) {
  const int64_t C = t.numel();
  if (t.is_contiguous()) return route::from_f64(t.raw_data(), t.dtype(), v, C);
  const ChannelValues out(t, 0.0);
  for (int64_t c = 0; c < C; ++c) out.set(c, v[c]);
}

static bool overlaps_any(const Tensor& t, Avoid avoid, Avoid also) noexcept {
  for (const Tensor* other : avoid)
    if (overlaps(t, *other)) return true;
  for (const Tensor* other : also)
    if (overlaps(t, *other)) return true;
  return false;
}

static bool reusable(const Tensor& t, std::span<const int64_t> sizes, DType dtype, Avoid avoid,
                     Avoid also) {
  bool ok = t.defined() && !t.is_read_only() &&
            std::equal(sizes.begin(), sizes.end(), t.sizes().begin(), t.sizes().end()) &&
            t.dtype() == dtype && t.is_contiguous();
  return ok && !overlaps_any(t, avoid, also);
}

void reuse_or_allocate(Tensor& t, const Shape& sizes, DType dtype, Avoid avoid, Avoid also) {
  if (!reusable(t, sizes, dtype, avoid, also)) t = Tensor::empty(sizes, dtype);
}

void reuse_or_allocate(Tensor& t, int64_t C, DType dtype, Avoid avoid, Avoid also) {
  if (!reusable(t, std::span<const int64_t>(&C, 1), dtype, avoid, also))
    t = Tensor::empty({C}, dtype);
}

// True when the elements of a 2-D or 3-D @p t cover a block of memory exactly once, in any order
// of its dimensions (no allocation: this runs on every call).
static bool dense(const Tensor& t) {
  std::array<std::pair<int64_t, int64_t>, 3> dims{};  // (stride, size) of dims with size > 1
  std::size_t count = 0;
  for (int64_t d = 0; d < t.dim() && d < 3; ++d)
    if (t.sizes()[d] > 1) dims[count++] = {t.strides()[d], t.sizes()[d]};
  for (std::size_t i = 1; i < count; ++i)  // insertion sort by stride
    for (std::size_t j = i; j > 0 && dims[j].first < dims[j - 1].first; --j)
      std::swap(dims[j], dims[j - 1]);
  int64_t expected = 1;
  for (std::size_t i = 0; i < count; ++i) {
    if (dims[i].first != expected) return false;
    expected *= dims[i].second;
  }
  return true;
}

void reuse_or_allocate_like(Tensor& out, const Tensor& input, Avoid avoid, Avoid also) {
  const bool same_strides = out.defined() && out.strides() == input.strides() && dense(input);
  bool ok = out.defined() && !out.is_read_only() && out.sizes() == input.sizes() &&
            out.dtype() == input.dtype() && (out.is_contiguous() || same_strides);
  if (!ok || overlaps_any(out, avoid, also)) out = Tensor::empty(input.sizes(), input.dtype());
}

}  // namespace bn1d::detail
