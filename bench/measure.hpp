// SPDX-License-Identifier: MIT
/// @file measure.hpp
/// @brief Timing (median of repeated calls) and the bandwidth kernels that define the bound.
#pragma once

#include <cstddef>
#include <functional>

namespace bench {

/// Timing policy, printed in the output header.
inline constexpr int kWarmupCalls = 2;          ///< at least this many warm-up calls ...
inline constexpr double kWarmupSeconds = 0.02;  ///< ... and at least this long (threads, caches)
inline constexpr int kMinRuns = 20;             ///< normal minimum of timed calls
inline constexpr int kMaxRuns = 200;            ///< fast calls: as many as fit kTargetSeconds
inline constexpr double kTargetSeconds = 0.2;   ///< aim of one measurement's timed calls
inline constexpr int kFloorRuns = 10;           ///< slow calls: at least this many
inline constexpr double kCapSeconds = 3.0;      ///< slow calls: fewer than kMinRuns past this

/// Median wall time of one call and how many timed calls it is the median of.
struct Timing {
  double seconds = 0;
  int runs = 0;
};

/// Calls @p fn at least kWarmupCalls times and for at least kWarmupSeconds (the fastest call
/// estimates its cost t: fast ops get a process's threads and caches in their steady state),
/// then times
/// clamp(kTargetSeconds / t, kMinRuns, kMaxRuns) calls with std::chrono::steady_clock, or only
/// max(kFloorRuns, kCapSeconds / t) calls when kMinRuns · t would exceed kCapSeconds.
Timing time_median(const std::function<void()>& fn);

/// "Read" kernel: sums @p bytes of @p src as 64-bit words, in parallel over the OpenMP threads.
void read_kernel(const void* src, std::size_t bytes);

/// "Copy" kernel: copies @p bytes from @p src to @p dst, one contiguous chunk per OpenMP thread,
/// with memcpy or, when @p streaming, with non-temporal stores (x86 SSE2; memcpy elsewhere).
void copy_kernel(void* dst, const void* src, std::size_t bytes, bool streaming);

}  // namespace bench
