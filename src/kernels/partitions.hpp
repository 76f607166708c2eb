// SPDX-License-Identifier: MIT
// How simd_schedule.cpp splits work: the grain of a thread, and the partitions of the
// reductions. Partitions depend on the shape only, never on the thread count, so that results
// do not either.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/blocking.hpp"
#include "kernels/view.hpp"

namespace bn1d::kernels::simd {

// At least this many elements per thread: below it, forking costs more than it saves.
constexpr int64_t kGrain = 1 << 16;
// Reductions are split into at most this many partitions, reduced separately and merged in
// order.
constexpr int64_t kPartitions = 16;

// Each partition is reduced on its own into a slot (a row of per-channel results) and the slots
// are merged in order. count is the number of partitions, slots the number of slots, slot(p)
// partition p's, values(s) the number of values per channel in slot s.

// Channel parts of the cols kernels (Layout::UnitStrideC) start at multiples of this many channels:
// a multiple of the float64 lanes of every target (8 on x86, 32 with 2048-bit SVE), so that each
// channel is reduced by the same vector or scalar code whichever part holds it (splitting changes
// no bit), and of a cache line of float64 (partitions written by different threads share no line of
// a slot).
constexpr int64_t kChannelAlign = 64;
// Channel parts hold at least this many channels (but one part may hold fewer): a part of a
// full block then holds at least kGrain values, what threads_for gives one thread, so that
// there are never fewer parts than threads. Narrower parts cost more than they balance:
// docs/tuning.md#min-part-channels.
constexpr int64_t kMinPartChannels = kGrain / kMaxRowsPerBlock;

// Cols kernels (Layout::UnitStrideC): a partition is a row part times a channel part. The rows r =
// n·L + l come in `blocks` blocks of `block` rows (the fewest blocks of at most kMaxRowsPerBlock
// rows, all of about the same size: 100 rows are two blocks of 50), grouped into at most
// kPartitions row parts of consecutive blocks. Batches of fewer than kPartitions blocks (e.g. (64,
// 2048): one block) also split their channels, into at most kPartitions / row_parts parts, so that
// they still spread over the threads. Partitions are numbered row part first (p = rp ·
// channel_parts + cp), so that a static schedule gives each thread consecutive rows. (The
// elementwise passes split rows, not these partitions: docs/tuning.md#elementwise-split-rows.) No
// partition is empty (row_parts ≤ blocks, channel_parts ≤ channel groups, and views without values
// reach no kernel): the cols partition kernels write their outputs from their first block. A slot
// is a row part.
struct ColsPartitions {
  int64_t rows, C, blocks, block, row_parts, groups, channel_parts, count, slots;
  explicit ColsPartitions(const View3& x)
      : rows(x.N * x.L),
        C(x.C),
        blocks((rows + kMaxRowsPerBlock - 1) / kMaxRowsPerBlock),
        block((rows + blocks - 1) / blocks),
        row_parts(std::min(blocks, kPartitions)),
        groups((C + kChannelAlign - 1) / kChannelAlign),
        channel_parts(
            std::min(kPartitions / row_parts, (C + kMinPartChannels - 1) / kMinPartChannels)),
        count(row_parts * channel_parts),
        slots(row_parts) {}
  int64_t slot(int64_t p) const { return p / channel_parts; }
  int64_t slot_first(int64_t s) const { return std::min(rows, s * blocks / row_parts * block); }
  int64_t first(int64_t p) const { return slot_first(slot(p)); }
  int64_t last(int64_t p) const { return slot_first(slot(p) + 1); }
  int64_t channel_first(int64_t p) const {
    return std::min(C, p % channel_parts * groups / channel_parts * kChannelAlign);
  }
  int64_t channel_last(int64_t p) const {
    return std::min(C, (p % channel_parts + 1) * groups / channel_parts * kChannelAlign);
  }
  double values(int64_t s) const { return static_cast<double>(slot_first(s + 1) - slot_first(s)); }
};

// Rows kernels (Layout::UnitStrideL) with long rows: units u = n · pieces + piece, a piece being
// kBlock values of l; each partition is its own slot.
struct RowsPartitions {
  int64_t L, pieces, units, count, slots;
  explicit RowsPartitions(const View3& x)
      : L(x.L),
        pieces((x.L + kBlock - 1) / kBlock),
        units(x.N * pieces),
        count(std::min(units, kPartitions)),
        slots(count) {}
  int64_t slot(int64_t p) const { return p; }
  int64_t first(int64_t p) const { return p * units / count; }
  int64_t last(int64_t p) const { return (p + 1) * units / count; }
  double values(int64_t p) const {
    int64_t v = 0;
    for (int64_t u = first(p); u < last(p); ++u) v += std::min(kBlock, L - (u % pieces) * kBlock);
    return static_cast<double>(v);
  }
};

}  // namespace bn1d::kernels::simd
