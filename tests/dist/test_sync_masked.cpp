// SPDX-License-Identifier: MIT
// Masked SyncBatchNorm1d under MPI: every rank builds the same global (N, C, L) batch and its valid
// positions (lengths or a mask) from a shared seed, and keeps its own rows for the synchronized
// module; the reference is one process's masked BatchNorm1d on the whole batch (itself checked
// against the packed valid values by tests/test_masked.cpp). The ranks' valid counts differ, and
// with 2 ranks or more one rank has no valid value.
#include <gtest/gtest.h>
#include <mpi.h>

#include <bn1d/bn1d.hpp>
#include <bn1d/dist/sync_batch_norm.hpp>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "dist_util.hpp"

namespace bn1d::dist_test {
namespace {

using bn1d::ValidPositions;

/// The global batch's valid positions and this rank's part, in one of the two forms.
struct Masks {
  ValidPositions global, local;
};

/// Lengths including 0 and L; the last rank's samples (with 2 ranks or more) all have length 0.
Masks lengths_masks(const Split& s, int64_t L) {
  std::vector<int64_t> lengths;
  for (int64_t n = 0; n < s.global; ++n) lengths.push_back(n % 3 == 1 ? L : (n * 5 + 2) % (L + 1));
  if (world_size() > 1) {
    const int64_t last = s.global - s.n.back();
    for (int64_t n = last; n < s.global; ++n) lengths[n] = 0;
  }
  const std::span<const int64_t> all(lengths);
  return {ValidPositions::from_lengths(all),
          ValidPositions::from_lengths(all.subspan(s.offset, s.local))};
}

/// A mask with holes (about 2/3 valid), shared by every rank.
Masks holes_masks(const Split& s, int64_t L, uint64_t seed) {
  const std::vector<double> r = values(bn1d::randn({s.global, L}, DType::Float64, seed));
  std::vector<uint8_t> mask(r.size());
  for (std::size_t i = 0; i < r.size(); ++i) mask[i] = r[i] > -0.43 ? 1 : 0;
  const std::span<const uint8_t> all(mask);
  return {ValidPositions::from_mask(all, s.global, L),
          ValidPositions::from_mask(all.subspan(s.offset * L, s.local * L), s.local, L)};
}

/// Two training steps then an eval step of the synchronized module on this rank's rows and of
/// the single-process reference on the global batch, with the valid positions of @p masks.
void compare_masked(const BatchNorm1dOptions& options, int64_t L, const Split& split,
                    const Masks& masks, uint64_t seed) {
  compare_with_reference(options, L, split, 2, seed, &masks.global, &masks.local);
}

TEST(SyncMasked, LengthsMatchSingleProcess) {
  const Split s = uneven_split();
  for (DType dtype : {DType::Float32, DType::Float64})
    compare_masked(BatchNorm1dOptions(5).dtype(dtype).momentum(0.3), 9, s, lengths_masks(s, 9), 3);
}

TEST(SyncMasked, MaskWithHolesMatchesSingleProcess) {
  const Split s = uneven_split();
  for (DType dtype : {DType::Float32, DType::Float64})
    compare_masked(BatchNorm1dOptions(4).dtype(dtype), 11, s, holes_masks(s, 11, 17), 5);
}

TEST(SyncMasked, OptionsMatchSingleProcess) {
  const Split s = uneven_split();
  const Masks m = lengths_masks(s, 6);
  compare_masked(BatchNorm1dOptions(3).momentum(std::nullopt), 6, s, m, 7);
  compare_masked(BatchNorm1dOptions(3).track_running_stats(false), 6, s, m, 8);
  compare_masked(BatchNorm1dOptions(3).affine(false).eps(1e-3), 6, s, m, 9);
}

TEST(SyncMasked, NoValidValueAnywhereIsAnErrorOnEveryRank) {
  const Split s = uneven_split();
  SyncBatchNorm1d sync(3);
  const Tensor x = global_batch(s.global, 3, 4, DType::Float32, 1);
  const std::vector<int64_t> zeros(static_cast<std::size_t>(s.local), 0);
  const ValidPositions none = ValidPositions::from_lengths(zeros);
  expect_same_error_everywhere([&] { (void)sync.forward(local_rows(x, s), none); },
                               "expected at least one valid position");
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  EXPECT_EQ(values(sync.running_var()), std::vector<double>(3, 1.0));
  // The ranks are still in step: a valid masked step works.
  const Masks m = lengths_masks(s, 4);
  EXPECT_NO_THROW((void)sync.forward(local_rows(x, s), m.local));
  EXPECT_EQ(sync.num_batches_tracked(), 1);
}

TEST(SyncMasked, LengthAboveLOnOneRankFailsEverywhere) {
  const int bad = world_size() - 1;
  const Split s = make_split(std::vector<int64_t>(static_cast<std::size_t>(world_size()), 2));
  SyncBatchNorm1d sync(3);
  const Tensor x = global_batch(s.global, 3, 4, DType::Float32, 2);
  const std::vector<int64_t> lengths{world_rank() == bad ? 5 : 4, 2};
  expect_error_everywhere(
      [&] { (void)sync.forward(local_rows(x, s), ValidPositions::from_lengths(lengths)); }, bad,
      "lengths");
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  EXPECT_EQ(values(sync.running_mean()), std::vector<double>(3, 0.0));
}

}  // namespace
}  // namespace bn1d::dist_test
