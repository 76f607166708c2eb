// SPDX-License-Identifier: MIT
// SyncBatchNorm1d under MPI: every rank builds the same global batch from a shared seed, keeps
// its own slice for the synchronized module and runs a single-process BatchNorm1d on the whole
// batch as the reference. Run with any number of ranks (ctest: 1 to 4).
#include <gtest/gtest.h>
#include <mpi.h>

#include <bn1d/bn1d.hpp>
#include <bn1d/dist/sync_batch_norm.hpp>
#include <string>
#include <vector>

#include "dist_util.hpp"

namespace bn1d::dist_test {
namespace {

struct Case {
  DType dtype;
  int64_t L;  // 0: (N, C) input
};

class SyncVsSingle : public ::testing::TestWithParam<Case> {};

TEST_P(SyncVsSingle, UnevenBatchesMatchSingleProcess) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(5).dtype(p.dtype), p.L, uneven_split(), 3, 11);
}

TEST_P(SyncVsSingle, CumulativeMomentum) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(4).dtype(p.dtype).momentum(std::nullopt).eps(1e-3), p.L,
                         uneven_split(), 3, 23);
}

TEST_P(SyncVsSingle, NoAffine) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(3).dtype(p.dtype).affine(false), p.L, uneven_split(), 2,
                         37);
}

TEST_P(SyncVsSingle, NoRunningStatsSynchronizesInEvalToo) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(6).dtype(p.dtype).track_running_stats(false), p.L,
                         uneven_split(), 2, 41);
}

// The fused activation's backward gates with the combined statistics and the module's bias.
TEST_P(SyncVsSingle, FusedActivation) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(5).dtype(p.dtype).activation(Activation::ReLU), p.L,
                         uneven_split(), 2, 61);
  compare_with_reference(
      BatchNorm1dOptions(5).dtype(p.dtype).activation(Activation::LeakyReLU).negative_slope(-0.3),
      p.L, uneven_split(), 2, 67);
}

TEST_P(SyncVsSingle, SingleValuePerChannelOnOneRank) {
  const Case p = GetParam();
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  // Rank 0 holds one row ((1, C) or (1, C, 1)): one value per channel on that rank.
  std::vector<int64_t> n(static_cast<std::size_t>(world_size()), 2);
  n[0] = 1;
  compare_with_reference(BatchNorm1dOptions(4).dtype(p.dtype), p.L > 0 ? 1 : 0, make_split(n), 3,
                         53);
}

INSTANTIATE_TEST_SUITE_P(Dist, SyncVsSingle,
                         ::testing::Values(Case{DType::Float32, 0}, Case{DType::Float32, 7},
                                           Case{DType::Float64, 0}, Case{DType::Float64, 7}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(bn1d::dtype_name(info.param.dtype)) +
                                  (info.param.L > 0 ? "_NCL" : "_NC");
                         });

TEST(SyncBatchNorm1d, ChannelsLastInput) {
  // (N, L, C) memory viewed as (N, C, L): any strides work on every rank.
  const Split s = uneven_split();
  const int64_t C = 3, L = 4;
  const Tensor x = global_batch(s.global, C, L, DType::Float64, 5);
  BatchNorm1d ref(BatchNorm1dOptions(C).dtype(DType::Float64));
  SyncBatchNorm1d sync(BatchNorm1dOptions(C).dtype(DType::Float64));
  const Tensor y_ref = ref.forward(x);
  // Copy this rank's rows into channels-last memory.
  std::vector<double> mem(static_cast<std::size_t>(s.local * C * L) + 1);
  const std::vector<double> mine = local_values(x, s);
  for (int64_t n = 0; n < s.local; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t l = 0; l < L; ++l)
        mem[static_cast<std::size_t>((n * L + l) * C + c)] =
            mine[static_cast<std::size_t>((n * C + c) * L + l)];
  const Tensor xl = Tensor::from_blob(mem.data(), {s.local, C, L}, {L * C, 1, C}, DType::Float64);
  expect_close(values(sync.forward(xl)), local_values(y_ref, s), DType::Float64, "channels-last",
               max_abs(values(y_ref)));
}

TEST(SyncBatchNorm1d, AllRanksEmptyChangesNothing) {
  SyncBatchNorm1d sync(4);
  const Tensor y = sync.forward(Tensor::zeros({0, 4}));
  EXPECT_EQ(y.sizes(), (Shape{0, 4}));
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  const auto g = sync.backward(Tensor::zeros({0, 4}));
  EXPECT_EQ(g.input.sizes(), (Shape{0, 4}));
  EXPECT_EQ(values(g.bias), std::vector<double>(4, 0.0));
}

TEST(SyncBatchNorm1d, GlobalSingleValueIsAnErrorOnEveryRank) {
  // Rank 0 holds one value per channel, the others none: the global count is 1.
  SyncBatchNorm1d sync(4);
  const int64_t N = world_rank() == 0 ? 1 : 0;
  try {
    (void)sync.forward(Tensor::ones({N, 4}));
    ADD_FAILURE() << "no error on rank " << world_rank();
  } catch (const bn1d::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "Expected more than 1 value per channel when training, got 1 value per channel "
              "over all ranks (input size [" +
                  std::to_string(N) + ", 4] on this rank)");
  }
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  EXPECT_EQ(values(sync.running_var()), std::vector<double>(4, 1.0));
}

/// Calls @p call, expecting bn1d::Error on every rank: @p own on rank @p bad, "rank <bad>
/// failed" on the others.
TEST(SyncBatchNorm1d, FourDimensionalInputOnOneRankFailsEverywhere) {
  const int bad = world_size() - 1;
  SyncBatchNorm1d sync(3);
  const Tensor good = bn1d::randn({4, 3});
  const Tensor wrong = bn1d::randn({2, 3, 2, 2});
  expect_error_everywhere([&] { (void)sync.forward(world_rank() == bad ? wrong : good); }, bad,
                          "expected 2D or 3D input (got 4D input)");
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  // Nothing changed; the module keeps working.
  EXPECT_NO_THROW((void)sync.forward(good));
  EXPECT_EQ(sync.num_batches_tracked(), 1);
}

TEST(SyncBatchNorm1d, WrongChannelCountOnOneRankFailsEverywhere) {
  const int bad = 0;
  SyncBatchNorm1d sync(3);
  expect_error_everywhere(
      [&] {
        (void)sync.forward(bn1d::randn({4, world_rank() == bad ? 5 : 3}));
      },
      bad, "expected input with 3 channels (num_features), got 5 channels");
  EXPECT_EQ(values(sync.running_mean()), std::vector<double>(3, 0.0));
}

TEST(SyncBatchNorm1d, WrongDtypeOnOneRankFailsEverywhere) {
  const int bad = world_size() / 2;
  SyncBatchNorm1d sync(3);
  expect_error_everywhere(
      [&] {
        (void)sync.forward(
            bn1d::randn({4, 3}, world_rank() == bad ? DType::Float64 : DType::Float32));
      },
      bad, "expected a float32 input (the module's dtype), got float64");
}

// 16-bit inputs: a pure bfloat16/float16 module gives every rank the same running statistics;
// a float32 module also takes them (mixed precision); an input of another dtype on one rank
// fails on every rank.
TEST(SyncBatchNorm1d, SixteenBitInputs) {
  for (const DType dtype : {DType::BFloat16, DType::Float16}) {
    const std::string name = dtype_name(dtype);
    SyncBatchNorm1d pure(BatchNorm1dOptions(3).dtype(dtype));
    const Tensor x = bn1d::randn({4 + world_rank(), 3, 5}, dtype, 7 + world_rank());
    const Tensor y = pure.forward(x);
    EXPECT_EQ(y.dtype(), dtype);
    expect_identical_on_all_ranks(pure.running_mean(), name + " running_mean");
    expect_identical_on_all_ranks(pure.running_var(), name + " running_var");
    SyncBatchNorm1d mixed(3);
    EXPECT_EQ(mixed.forward(x).dtype(), dtype);
    EXPECT_EQ(mixed.running_mean().dtype(), DType::Float32);
    expect_identical_on_all_ranks(mixed.running_mean(), name + " mixed running_mean");
    const int bad = world_size() - 1;
    expect_error_everywhere(
        [&] {
          (void)pure.forward(bn1d::randn({4, 3}, world_rank() == bad ? DType::Float32 : dtype));
        },
        bad, "expected a " + name + " input (the module's dtype), got float32");
    EXPECT_EQ(pure.num_batches_tracked(), 1);
  }
}

// Running statistics a training forward would update in place may not be read-only: an Error
// on every rank before anything is written; in eval mode they are only read.
TEST(SyncBatchNorm1d, ReadOnlyRunningStatsOnOneRankFailEverywhere) {
  const int bad = 0;
  SyncBatchNorm1d sync(3);
  const std::vector<float> mean(3, 0.0f);
  if (world_rank() == bad) {
    sync.running_mean() = Tensor::from_blob(mean.data(), {3}, DType::Float32);
  }
  Tensor output = Tensor::full({4, 3}, 7.0);
  expect_error_everywhere(
      [&] {
        sync.forward(bn1d::randn({4, 3}), output);
      },
      bad, "running_mean: expected a writable tensor");
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  EXPECT_EQ(values(output), std::vector<double>(12, 7.0));
  sync.eval();
  EXPECT_NO_THROW((void)sync.forward(bn1d::randn({4, 3})));
}

TEST(SyncBatchNorm1d, WrongGradShapeOnOneRankFailsEverywhere) {
  const int bad = world_size() - 1;
  SyncBatchNorm1d sync(3);
  (void)sync.forward(bn1d::randn({4, 3}, DType::Float32, 3));
  expect_error_everywhere(
      [&] {
        (void)sync.backward(Tensor::ones({world_rank() == bad ? 5 : 4, 3}));
      },
      bad, "grad_output");
  EXPECT_NO_THROW((void)sync.backward(Tensor::ones({4, 3})));
}

TEST(SyncBatchNorm1d, BackwardBeforeForwardFailsEverywhere) {
  // Every rank must make the same collective calls, so no rank may have run a forward here.
  SyncBatchNorm1d sync(3);
  expect_error_everywhere(
      [&] {
        (void)sync.backward(Tensor::ones({4, 3}));
      },
      world_rank(), "SyncBatchNorm1d(3): backward called before forward");
}

TEST(SyncBatchNorm1d, ModeDisagreementFailsEverywhere) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  // Without running statistics eval mode synchronizes too, so the mismatch is seen.
  SyncBatchNorm1d sync(BatchNorm1dOptions(3).track_running_stats(false));
  sync.train(world_rank() != 1);
  try {
    (void)sync.forward(bn1d::randn({4, 3}));
    ADD_FAILURE() << "no error on rank " << world_rank();
  } catch (const bn1d::Error& e) {
    EXPECT_NE(std::string(e.what()).find("ranks disagree on the mode"), std::string::npos)
        << e.what();
  }
}

TEST(SyncBatchNorm1d, EvalWithRunningStatsMakesOnlyTheHeaderCollective) {
  // Every rank calls: eval forward/backward with running statistics exchange the header (so a
  // disagreement or an error is seen everywhere) and compute locally, as BatchNorm1d does.
  SyncBatchNorm1d sync(3);
  sync.eval();
  BatchNorm1d ref(3);
  ref.eval();
  const Tensor x = bn1d::randn({4, 3}, DType::Float32, 9 + static_cast<uint64_t>(world_rank()));
  EXPECT_EQ(values(sync.forward(x)), values(ref.forward(x)));
  EXPECT_EQ(values(sync.backward(Tensor::ones({4, 3})).input),
            values(ref.backward(Tensor::ones({4, 3})).input));
  // module().infer() is the collective-free way: only rank 0 calls, nothing waits for the others.
  if (world_rank() == 0) {
    EXPECT_EQ(values(sync.module().infer(x)), values(ref.infer(x)));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(SyncBatchNorm1d, StateDictCarriesTheSynchronizedCount) {
  SyncBatchNorm1d sync(3);
  for (int i = 0; i < 3; ++i) (void)sync.forward(bn1d::randn({4, 3}, DType::Float32, 100));
  const bn1d::StateDict state = sync.state_dict();
  EXPECT_EQ(*state.at("num_batches_tracked").data<int64_t>(), 3);
  EXPECT_EQ(sync.module().num_batches_tracked(), 3);  // one count, kept by the shared step
  SyncBatchNorm1d other(3);
  other.load_state_dict(state);
  EXPECT_EQ(other.num_batches_tracked(), 3);
  EXPECT_EQ(values(other.running_mean()), values(sync.running_mean()));
  other.reset_running_stats();
  EXPECT_EQ(other.num_batches_tracked(), 0);
  // Move-only: the moved-to module keeps the communicator and the state.
  SyncBatchNorm1d moved(std::move(sync));
  EXPECT_EQ(moved.num_batches_tracked(), 3);
  EXPECT_NO_THROW((void)moved.forward(bn1d::randn({4, 3})));
  EXPECT_EQ(moved.num_batches_tracked(), 4);
}

TEST(SyncBatchNorm1d, SelfCommunicatorIsALocalBatchNorm) {
  // A world of one: no collective, identical to BatchNorm1d on the local batch.
  SyncBatchNorm1d sync(BatchNorm1dOptions(3).dtype(DType::Float64), MPI_COMM_SELF);
  BatchNorm1d ref(BatchNorm1dOptions(3).dtype(DType::Float64));
  const Tensor x = bn1d::randn({5, 3, 2}, DType::Float64, 77 + static_cast<uint64_t>(world_rank()));
  expect_close(values(sync.forward(x)), values(ref.forward(x)), DType::Float64, "self");
  expect_close(values(sync.running_var()), values(ref.running_var()), DType::Float64, "self var");
}

}  // namespace
}  // namespace bn1d::dist_test
