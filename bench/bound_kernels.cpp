// SPDX-License-Identifier: MIT
/// @file bound_kernels.cpp
/// @brief The loops of the bandwidth kernels (measure.hpp), one Highway translation unit compiled
/// for every target and dispatched at run time like bn1d's own kernels: full-width vectors and
/// four independent accumulators, so that a read of data in cache is bound by the cache, not by
/// one chain of additions (a single 16-byte accumulator, what the compiler makes of a plain loop
/// without -march, read 1 MiB in L2 at a quarter of the speed of the loads on AMD Zen 5).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bound_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include <cstddef>
#include <cstdint>
#include <cstring>
// clang-format on
#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bench::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DU = hn::ScalableTag<std::uint64_t>;
using VU = hn::Vec<DU>;

// Σ of words[0 … count − 1] (and of more[…] when given), four vectors per step.
std::uint64_t SumWords(const std::uint64_t* HWY_RESTRICT words,
                       const std::uint64_t* HWY_RESTRICT more, std::size_t count) {
  const DU d;
  const std::size_t N = hn::Lanes(d);
  VU s0 = hn::Zero(d), s1 = s0, s2 = s0, s3 = s0;
  std::size_t i = 0;
  if (more == nullptr) {
    for (; i + 4 * N <= count; i += 4 * N) {
      s0 = hn::Add(s0, hn::LoadU(d, words + i));
      s1 = hn::Add(s1, hn::LoadU(d, words + i + N));
      s2 = hn::Add(s2, hn::LoadU(d, words + i + 2 * N));
      s3 = hn::Add(s3, hn::LoadU(d, words + i + 3 * N));
    }
  } else {
    for (; i + 2 * N <= count; i += 2 * N) {
      s0 = hn::Add(s0, hn::LoadU(d, words + i));
      s1 = hn::Add(s1, hn::LoadU(d, more + i));
      s2 = hn::Add(s2, hn::LoadU(d, words + i + N));
      s3 = hn::Add(s3, hn::LoadU(d, more + i + N));
    }
  }
  std::uint64_t total = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < count; ++i) total += words[i] + (more ? more[i] : 0);
  return total;
}

// dst[i] = a[i] + b[i] for i < count, or dst[i] = a[i] when b is null (a copy), with
// non-temporal stores when `stream` (after plain ones up to the first vector-aligned dst).
void CombineWords(std::uint64_t* HWY_RESTRICT dst, const std::uint64_t* HWY_RESTRICT a,
                  const std::uint64_t* HWY_RESTRICT b, std::size_t count, bool stream) {
  const DU d;
  const std::size_t N = hn::Lanes(d);
  std::size_t i = 0;
  const auto value = [&](std::size_t k) {
    return b ? hn::Add(hn::LoadU(d, a + k), hn::LoadU(d, b + k)) : hn::LoadU(d, a + k);
  };
  if (stream) {
    for (; i < count && reinterpret_cast<std::uintptr_t>(dst + i) % (N * 8) != 0; ++i)
      dst[i] = a[i] + (b ? b[i] : 0);
    for (; i + N <= count; i += N) hn::Stream(value(i), d, dst + i);
    hwy::FlushStream();
  } else {
    for (; i + N <= count; i += N) hn::StoreU(value(i), d, dst + i);
  }
  for (; i < count; ++i) dst[i] = a[i] + (b ? b[i] : 0);
}

}  // namespace bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "bound_kernels.hpp"

namespace bench {

HWY_EXPORT(SumWords);
HWY_EXPORT(CombineWords);

std::uint64_t sum_words(const std::uint64_t* words, const std::uint64_t* more, std::size_t count) {
  return HWY_DYNAMIC_DISPATCH(SumWords)(words, more, count);
}

void combine_words(std::uint64_t* dst, const std::uint64_t* a, const std::uint64_t* b,
                   std::size_t count, bool stream) {
  HWY_DYNAMIC_DISPATCH(CombineWords)(dst, a, b, count, stream);
}

}  // namespace bench
#endif  // HWY_ONCE
