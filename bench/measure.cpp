// SPDX-License-Identifier: MIT
/// @file measure.cpp
/// @brief Median timing and the read/copy/combine bandwidth kernels.
#include "measure.hpp"

#include "bound_kernels.hpp"
#include "runner.hpp"

#include <malloc.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_of(const std::function<void()>& fn) {
  const auto start = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Calls @p fn at least kWarmupCalls times and for at least @p seconds; returns the fastest
/// call's time.
double warm_up(const std::function<void()>& fn, double seconds) {
  double fastest = seconds_of(fn), spent = fastest;
  for (int i = 1; i < kWarmupCalls || spent < seconds; ++i) {
    const double t = seconds_of(fn);
    fastest = std::min(fastest, t), spent += t;
  }
  return fastest;
}

/// The median of @p times (the mean of the middle two for an even count); reorders them.
double median(std::vector<double>& times) {
  const auto mid = times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2);
  std::nth_element(times.begin(), mid, times.end());
  double m = *mid;
  if (times.size() % 2 == 0) m = (m + *std::max_element(times.begin(), mid)) / 2;
  return m;
}

/// [begin, end) of thread @p t's share of @p count items, boundaries on multiples of 64 items.
std::pair<std::size_t, std::size_t> chunk(std::size_t count, int t, int threads) {
  const std::size_t blocks = (count + 63) / 64;
  const std::size_t begin = blocks * t / threads * 64;
  const std::size_t end = blocks * (t + 1) / threads * 64;
  return {std::min(begin, count), std::min(end, count)};
}

/// Keeps the read kernels' sums alive so the compiler cannot drop the loads.
volatile std::uint64_t g_sink = 0;

}  // namespace

std::vector<Timing> time_interleaved(const std::vector<std::function<void()>>& fns) {
  const std::size_t count = fns.size();
  std::vector<int> per_round(count);
  for (std::size_t f = 0; f < count; ++f) {
    const double t = warm_up(fns[f], kWarmupSeconds);
    int runs = std::clamp(static_cast<int>(std::ceil(kTargetSeconds / std::max(t, 1e-9))), kMinRuns,
                          kMaxRuns);
    if (kMinRuns * t > kCapSeconds) runs = std::max(kFloorRuns, static_cast<int>(kCapSeconds / t));
    per_round[f] = (runs + kRounds - 1) / kRounds;
  }
  std::vector<std::vector<double>> times(count);
  for (int round = 0; round < kRounds; ++round) {
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t f = (i + static_cast<std::size_t>(round)) % count;
      warm_up(fns[f], kRoundWarmupSeconds);
      for (int k = 0; k < per_round[f]; ++k) times[f].push_back(seconds_of(fns[f]));
    }
  }
  std::vector<Timing> medians(count);
  for (std::size_t f = 0; f < count; ++f) medians[f] = {median(times[f]), per_round[f] * kRounds};
  return medians;
}

void read_kernel(const void* src, std::size_t bytes) {
  const auto* words = static_cast<const std::uint64_t*>(src);
  const std::size_t count = bytes / sizeof(std::uint64_t);  // a 4-byte tail, if any, is ignored
  std::uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
  {
    const auto [begin, end] = chunk(count, omp_get_thread_num(), omp_get_num_threads());
    total += sum_words(words + begin, nullptr, end - begin);
  }
  g_sink = total;
}

void copy_kernel(void* dst, const void* src, std::size_t bytes, bool streaming) {
#pragma omp parallel
  {
    const auto [begin, end] = chunk(bytes, omp_get_thread_num(), omp_get_num_threads());
    char* d = static_cast<char*>(dst) + begin;
    const char* s = static_cast<const char*>(src) + begin;
    if (streaming) {  // whole words streamed, a tail of fewer than 8 bytes copied
      const std::size_t words = (end - begin) / sizeof(std::uint64_t);
      combine_words(reinterpret_cast<std::uint64_t*>(d), reinterpret_cast<const std::uint64_t*>(s),
                    nullptr, words, true);
      std::memcpy(d + words * 8, s + words * 8, end - begin - words * 8);
    } else {
      std::memcpy(d, s, end - begin);
    }
  }
}

void read2_kernel(const void* a, const void* b, std::size_t bytes) {
  const auto* wa = static_cast<const std::uint64_t*>(a);
  const auto* wb = static_cast<const std::uint64_t*>(b);
  const std::size_t count = bytes / sizeof(std::uint64_t);
  std::uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
  {
    const auto [begin, end] = chunk(count, omp_get_thread_num(), omp_get_num_threads());
    total += sum_words(wa + begin, wb + begin, end - begin);
  }
  g_sink = total;
}

void combine_kernel(void* dst, const void* a, const void* b, std::size_t bytes, bool streaming) {
  const std::size_t count = bytes / sizeof(std::uint64_t);
#pragma omp parallel
  {
    const auto [begin, end] = chunk(count, omp_get_thread_num(), omp_get_num_threads());
    combine_words(static_cast<std::uint64_t*>(dst) + begin,
                  static_cast<const std::uint64_t*>(a) + begin,
                  static_cast<const std::uint64_t*>(b) + begin, end - begin, streaming);
  }
}

void prepare_process(int threads) {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  omp_set_num_threads(threads);
#if BN1D_HAVE_TORCH
  set_torch_threads(threads);
#endif
}

}  // namespace bench
