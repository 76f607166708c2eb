// SPDX-License-Identifier: MIT
/// @file relu_kernels.cpp
/// @brief The ReLU passes of relu_kernels.hpp: one Highway translation unit compiled for every
/// target (full-width vectors, as bn1d's own kernels), so that the unfused pair is not slowed
/// by a plain loop's SSE2 code; OpenMP splits each pass into one contiguous chunk per thread.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "relu_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include <cstddef>
// clang-format on
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bench::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// y = max(y, 0) over count floats.
void ReluInPlace(float* HWY_RESTRICT y, std::size_t count) {
  const hn::ScalableTag<float> d;
  const std::size_t N = hn::Lanes(d);
  const auto zero = hn::Zero(d);
  std::size_t i = 0;
  for (; i + N <= count; i += N) hn::StoreU(hn::Max(hn::LoadU(d, y + i), zero), d, y + i);
  for (; i < count; ++i) y[i] = y[i] > 0 ? y[i] : 0.0f;
}

// dx = dy where y > 0, else 0, over count floats.
void ReluBackward(float* HWY_RESTRICT dx, const float* HWY_RESTRICT dy, const float* HWY_RESTRICT y,
                  std::size_t count) {
  const hn::ScalableTag<float> d;
  const std::size_t N = hn::Lanes(d);
  const auto zero = hn::Zero(d);
  std::size_t i = 0;
  for (; i + N <= count; i += N) {
    const auto positive = hn::Gt(hn::LoadU(d, y + i), zero);
    hn::StoreU(hn::IfThenElseZero(positive, hn::LoadU(d, dy + i)), d, dx + i);
  }
  for (; i < count; ++i) dx[i] = y[i] > 0 ? dy[i] : 0.0f;
}

}  // namespace bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <omp.h>

#include <algorithm>
#include <utility>

#include "relu_kernels.hpp"

namespace bench {
namespace {

/// [begin, end) of thread @p t's share of @p count floats, boundaries on multiples of 16 (64 B).
std::pair<std::size_t, std::size_t> chunk(std::size_t count, int t, int threads) {
  const std::size_t lines = (count + 15) / 16;
  return {std::min(lines * t / threads * 16, count),
          std::min(lines * (t + 1) / threads * 16, count)};
}

}  // namespace

HWY_EXPORT(ReluInPlace);
HWY_EXPORT(ReluBackward);

void relu_in_place(float* y, std::size_t count) {
#pragma omp parallel
  {
    const auto [begin, end] = chunk(count, omp_get_thread_num(), omp_get_num_threads());
    HWY_DYNAMIC_DISPATCH(ReluInPlace)(y + begin, end - begin);
  }
}

void relu_backward(float* dx, const float* dy, const float* y, std::size_t count) {
#pragma omp parallel
  {
    const auto [begin, end] = chunk(count, omp_get_thread_num(), omp_get_num_threads());
    HWY_DYNAMIC_DISPATCH(ReluBackward)(dx + begin, dy + begin, y + begin, end - begin);
  }
}

}  // namespace bench
#endif  // HWY_ONCE
