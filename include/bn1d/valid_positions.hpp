// SPDX-License-Identifier: MIT
/// @file valid_positions.hpp
/// @brief Which positions of a padded (N, C, L) batch are real: masked batch normalization.
///
/// A batch of variable-length sequences is padded to a common length L. Batch normalization over
/// such a batch must take its statistics over the real values only: with ValidPositions, every
/// statistic (mean, variance, the running statistics' update, the gradient sums) is that of the
/// valid values, so that the outputs, running statistics and gradients at the valid positions
/// equal those of torch.nn.BatchNorm1d applied to the packed valid values as a (count, C) batch.
/// The output and the input gradient are 0 at every padding position.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace bn1d {

/// The valid positions of an (N, C, L) batch: the same positions in every channel, given per
/// sample either as lengths (sample n's valid positions are [0, lengths[n])) or as an (N, L)
/// boolean mask (true = valid). They are stored as runs of consecutive valid positions; the
/// input's N and L are checked against them at each call that uses them.
class ValidPositions {
 public:
  /// A run of consecutive valid positions of one sample: positions [start, start + length) of
  /// sample n.
  struct Run {
    int64_t n = 0;       ///< the sample
    int64_t start = 0;   ///< its first valid position
    int64_t length = 0;  ///< the number of valid positions (> 0)
  };

  /// No sample (it fits only an input with N = 0).
  ValidPositions() = default;

  /// Sample n's valid positions are [0, lengths[n]). Throws Error "lengths: expected values ≥ 0,
  /// got lengths[n] = v" for a negative length; lengths above the input's L are refused when the
  /// positions are used.
  static ValidPositions from_lengths(std::span<const int64_t> lengths);

  /// Valid where @p mask (N·L values, row-major (N, L)) is nonzero. Throws Error for N or L
  /// negative, or a span whose size is not N·L.
  static ValidPositions from_mask(std::span<const uint8_t> mask, int64_t N, int64_t L);
  /// As above with bool values.
  static ValidPositions from_mask(std::span<const bool> mask, int64_t N, int64_t L);

  /// N, the number of samples.
  int64_t batch_size() const noexcept { return batch_size_; }
  /// True when built from lengths (any L ≥ max_length() fits); false for a mask (L must match).
  bool from_lengths() const noexcept { return length_ < 0; }
  /// L of the mask, or −1 when built from lengths.
  int64_t length() const noexcept { return length_; }
  /// The largest valid position + 1 over all samples (0 without valid positions).
  int64_t max_length() const noexcept { return max_length_; }
  /// The number of valid positions: the count of values per channel.
  int64_t count() const noexcept { return count_; }
  /// The runs in order of (n, start).
  std::span<const Run> runs() const noexcept { return runs_; }

  /// Throws Error unless these positions fit an (N, C, L) input of sizes @p sizes: a 3-D input,
  /// N samples, and L equal to the mask's (or at least max_length() for lengths). The message
  /// starts with "lengths" or "mask", e.g. "lengths: expected 4 values (one per sample of the
  /// input of size [4, 3, 10]), got 5".
  void check_fits(const std::vector<int64_t>& sizes) const;

 private:
  // Positions of @p N samples made of @p runs (in order of (n, start)); @p L: the mask's
  // length, or −1 for lengths.
  ValidPositions(std::vector<Run> runs, int64_t N, int64_t L);

  std::vector<Run> runs_;
  int64_t batch_size_ = 0;
  int64_t length_ = -1;
  int64_t max_length_ = 0;
  int64_t count_ = 0;
};

}  // namespace bn1d
