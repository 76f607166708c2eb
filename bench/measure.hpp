// SPDX-License-Identifier: MIT
/// @file measure.hpp
/// @brief Timing (median of repeated calls) and the bandwidth kernels that define the bound: one
/// per pass shape of the ops (read one stream; one in, one out; read two; two in, one out).
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

namespace bench {

/// Timing policy, printed in the output header.
inline constexpr int kWarmupCalls = 2;          ///< at least this many warm-up calls ...
inline constexpr double kWarmupSeconds = 0.02;  ///< ... and at least this long (threads, caches)
inline constexpr int kMinRuns = 20;             ///< normal minimum of timed calls
inline constexpr int kMaxRuns = 200;            ///< fast calls: as many as fit kTargetSeconds
inline constexpr double kTargetSeconds = 0.2;   ///< aim of one measurement's timed calls
inline constexpr int kFloorRuns = 10;           ///< slow calls: at least this many
inline constexpr double kCapSeconds = 3.0;      ///< slow calls: fewer than kMinRuns past this
inline constexpr int kRounds = 5;               ///< interleaved rounds the timed calls are split in
inline constexpr double kRoundWarmupSeconds = 0.002;  ///< warm-up at the start of each round

/// Median wall time of one call and how many timed calls it is the median of.
struct Timing {
  double seconds = 0;
  int runs = 0;
};

/// Times every function of @p fns and returns their medians, in order. Each function is first
/// warmed up (at least kWarmupCalls calls and kWarmupSeconds; the fastest call estimates its
/// cost t) and gets clamp(kTargetSeconds / t, kMinRuns, kMaxRuns) timed calls, or only
/// max(kFloorRuns, kCapSeconds / t) when kMinRuns · t would exceed kCapSeconds. The timed calls
/// are split into kRounds rounds; each round runs the functions in turn (the order rotated by
/// one each round), each after a warm-up of kWarmupCalls calls and kRoundWarmupSeconds. On a
/// shared machine whose speed drifts over seconds, every function is then timed across the
/// same stretch of time, and their ratios do not depend on which one ran during a slow spell.
std::vector<Timing> time_interleaved(const std::vector<std::function<void()>>& fns);

/// Prepares the process for timing on @p threads OpenMP (and libtorch) threads. libtorch allocates
/// its outputs on every call: glibc would serve each large block with a fresh mmap (page faults on
/// every call), so all blocks stay on the heap and a freed output is reused warm, the closest
/// libtorch 1.13 gets to a preallocated output. Same for every library.
void prepare_process(int threads);

/// "Read" kernel: sums @p bytes of @p src as 64-bit words, in parallel over the OpenMP threads.
void read_kernel(const void* src, std::size_t bytes);

/// "Copy" kernel: copies @p bytes from @p src to @p dst, one contiguous chunk per OpenMP thread,
/// with memcpy or, when @p streaming, with non-temporal stores (bound_kernels.cpp).
void copy_kernel(void* dst, const void* src, std::size_t bytes, bool streaming);

/// "Read two" kernel: sums @p bytes of @p a and of @p b as 64-bit words in one loop (two
/// streams at once, as a pass over x and dy reads them), in parallel over the OpenMP threads.
void read2_kernel(const void* a, const void* b, std::size_t bytes);

/// "Combine" kernel: dst = a + b as 64-bit words over @p bytes (two streams in, one out), one
/// contiguous chunk per OpenMP thread, with plain or, when @p streaming, non-temporal stores.
/// The loops of all four are Highway kernels, full vectors of the best target of the CPU
/// (bound_kernels.cpp).
void combine_kernel(void* dst, const void* a, const void* b, std::size_t bytes, bool streaming);

}  // namespace bench
