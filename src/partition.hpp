// SPDX-License-Identifier: MIT
// How a batch splits into groups that each have their own statistics, and which positions
// count: the whole batch (BatchNorm1d), its valid positions (masked), or chunks of samples
// (GhostBatchNorm1d). The steps run the kernels on each group's sub-views.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "bn1d/tensor.hpp"
#include "bn1d/valid_positions.hpp"
#include "kernels/view.hpp"

namespace bn1d::detail {

struct Partition {
  const ValidPositions* valid = nullptr;  ///< masked: only these positions count (one group)
  std::span<const int64_t> bounds;        ///< chunks: group g holds samples [b[g], b[g + 1])

  /// The number of groups, each with its own statistics.
  int64_t groups() const noexcept {
    return bounds.size() > 1 ? static_cast<int64_t>(bounds.size()) - 1 : 1;
  }
  /// The positions alone, without the chunks (a normalization with running statistics).
  Partition positions_only() const noexcept { return {valid, {}}; }
};

/// The sub-view of samples [n, n + count) and positions [l, l + length) of @p v.
template <class View>
View sub_view(View v, DType dtype, int64_t n, int64_t count, int64_t l, int64_t length) {
  const int64_t offset = n * v.sN + l * v.sL;
  if constexpr (std::is_const_v<std::remove_pointer_t<decltype(v.data)>>)
    v.data = static_cast<const char*>(v.data) + offset * static_cast<int64_t>(element_size(dtype));
  else
    v.data = static_cast<char*>(v.data) + offset * static_cast<int64_t>(element_size(dtype));
  if constexpr (requires { v.N; }) {
    v.N = count;
    v.L = length;
  }
  return v;
}

/// Calls @p f(n, l, count, length) for the block of group @p g of a partition without valid
/// positions over an (N, ·, L) batch: samples [n, n + count) at positions [l, l + length) (the
/// runs of valid positions are walked by route_groups.cpp).
template <class F>
void for_each_block(const Partition& part, int64_t g, int64_t N, int64_t L, F&& f) {
  if (part.bounds.size() > 1) {
    const int64_t n0 = part.bounds[g], n1 = part.bounds[g + 1];
    f(n0, int64_t{0}, n1 - n0, L);
  } else {
    f(int64_t{0}, int64_t{0}, N, L);
  }
}

/// The number of values per channel of group @p g.
inline int64_t group_count(const Partition& part, int64_t g, int64_t N, int64_t L) {
  if (part.valid != nullptr) return part.valid->count();
  int64_t count = 0;
  for_each_block(part, g, N, L, [&](int64_t, int64_t, int64_t n, int64_t len) { count = n * len; });
  return count;
}

}  // namespace bn1d::detail
