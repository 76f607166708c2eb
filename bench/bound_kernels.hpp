// SPDX-License-Identifier: MIT
/// @file bound_kernels.hpp
/// @brief The serial loops of the bandwidth kernels (bound_kernels.cpp: Highway, every target,
/// dispatched at run time); measure.cpp splits the buffers over the OpenMP threads.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bench {

/// Σ words[i] (+ more[i] when @p more is not null) for i < @p count, wrapping modulo 2^64.
std::uint64_t sum_words(const std::uint64_t* words, const std::uint64_t* more, std::size_t count);

/// dst[i] = a[i] + b[i] (or a[i] when @p b is null) for i < @p count, with non-temporal stores
/// when @p stream.
void combine_words(std::uint64_t* dst, const std::uint64_t* a, const std::uint64_t* b,
                   std::size_t count, bool stream);

}  // namespace bench
