// SPDX-License-Identifier: MIT
// Block and tile sizes shared by the SIMD kernels and their scheduler
// (simd_schedule.cpp). They depend on nothing
// but these constants and the shape, so results never depend on the thread count.
#pragma once

#include <cstdint>

namespace bn1d::kernels {

/// Values per statistics block: small enough that a block's second pass hits L1/L2.
constexpr int64_t kBlock = 4096;
/// Rows of a statistics block of the cols kernels (Layout::UnitStrideC): each block is reduced in
/// one pass per chunk of channels, in values shifted by the block's first row; at most 64 rows
/// keeps the shifted sums' cancellation under log2(65) bits (docs/math.md).
constexpr int64_t kMaxRowsPerBlock = 64;
/// Channels-last output: units of kChannelBlock channels of one n, transposed through tiles of
/// kTileL values of l.
constexpr int64_t kChannelBlock = 16;
constexpr int64_t kTileL = 64;

}  // namespace bn1d::kernels
