// SPDX-License-Identifier: MIT
// Ranks that disagree (options, mode, call, a failing or moved-from rank): every rank throws a
// bn1d::Error naming the problem, nothing changes, and the next valid step works. A hang fails
// the test (main.cpp's watchdog).
#include <gtest/gtest.h>
#include <mpi.h>

#include <bn1d/bn1d.hpp>
#include <bn1d/dist/sync_batch_norm.hpp>
#include <string>
#include <vector>

#include "dist_util.hpp"

namespace bn1d::dist_test {
namespace {

TEST(SyncBatchNorm1dDisagreement, NumFeatures) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(5),
                             "num_features (rank 0: 3, rank 1: 5)");
}

TEST(SyncBatchNorm1dDisagreement, NumFeaturesLarge) {
  // The per-channel records would differ by far more than the header: nothing is exchanged.
  expect_option_disagreement(BatchNorm1dOptions(2), BatchNorm1dOptions(4096),
                             "num_features (rank 0: 2, rank 1: 4096)");
}

TEST(SyncBatchNorm1dDisagreement, Dtype) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).dtype(DType::Float64),
                             "the dtype (rank 0: float32, rank 1: float64)");
}

TEST(SyncBatchNorm1dDisagreement, Eps) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).eps(1e-3),
                             "eps (rank 0: 1e-05, rank 1: 0.001)");
}

TEST(SyncBatchNorm1dDisagreement, Momentum) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).momentum(std::nullopt),
                             "momentum (rank 0: 0.1, rank 1: None)");
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).momentum(0.2),
                             "momentum (rank 0: 0.1, rank 1: 0.2)");
}

TEST(SyncBatchNorm1dDisagreement, Activation) {
  expect_option_disagreement(BatchNorm1dOptions(3),
                             BatchNorm1dOptions(3).activation(Activation::ReLU),
                             "the activation (rank 0: none, rank 1: relu)");
  const BatchNorm1dOptions leaky = BatchNorm1dOptions(3).activation(Activation::LeakyReLU);
  expect_option_disagreement(leaky, BatchNorm1dOptions(leaky).negative_slope(0.2),
                             "negative_slope (rank 0: 0.01, rank 1: 0.2)");
}

TEST(SyncBatchNorm1dDisagreement, Affine) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).affine(false),
                             "affine (rank 0: true, rank 1: false)");
}

TEST(SyncBatchNorm1dDisagreement, TrackRunningStats) {
  expect_option_disagreement(BatchNorm1dOptions(3),
                             BatchNorm1dOptions(3).track_running_stats(false),
                             "track_running_stats (rank 0: true, rank 1: false)");
}

TEST(SyncBatchNorm1dDisagreement, TrainingVsEvalWithRunningStats) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SyncBatchNorm1d sync(3);
  const Snapshot before(sync);
  const Tensor x = bn1d::randn({4, 3}, DType::Float32, 6);
  sync.train(world_rank() != kOdd);  // rank 1 evaluates, the others train
  expect_same_error_everywhere(
      [&] { (void)sync.forward(x); },
      "SyncBatchNorm1d: ranks disagree on the mode (rank 0: training, rank 1: eval with running "
      "statistics)");
  EXPECT_TRUE(Snapshot(sync) == before);
  sync.train(world_rank() == kOdd);  // and the other way round
  expect_same_error_everywhere(
      [&] { (void)sync.forward(x); },
      "SyncBatchNorm1d: ranks disagree on the mode (rank 0: eval with running statistics, rank 1: "
      "training)");
  EXPECT_TRUE(Snapshot(sync) == before);
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, ForwardVsBackward) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SyncBatchNorm1d sync(3);
  const Tensor x = bn1d::randn({4, 3}, DType::Float32, 7 + static_cast<uint64_t>(world_rank()));
  (void)sync.forward(x);
  const Snapshot before(sync);
  // Rank 1 goes on to backward (a synchronized one), the others make another forward.
  expect_same_error_everywhere(
      [&] {
        if (world_rank() == kOdd) {
          (void)sync.backward(Tensor::ones({4, 3}));
        } else {
          (void)sync.forward(x);
        }
      },
      "SyncBatchNorm1d: ranks disagree on the call (rank 0: forward, rank 1: backward)");
  EXPECT_TRUE(Snapshot(sync) == before);
  EXPECT_NO_THROW((void)sync.backward(Tensor::ones({4, 3})));  // the first forward's backward
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, ExtraEvalForwardOnOneRank) {
  // Rank 1 makes an extra eval forward (with running statistics) before its backward; the
  // others go straight to backward.
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SyncBatchNorm1d sync(3);
  const Tensor x = bn1d::randn({4, 3}, DType::Float32, 8 + static_cast<uint64_t>(world_rank()));
  (void)sync.forward(x);
  const Snapshot before(sync);
  expect_same_error_everywhere(
      [&] {
        if (world_rank() == kOdd) {
          sync.eval();
          (void)sync.forward(x);
        } else {
          (void)sync.backward(Tensor::ones({4, 3}));
        }
      },
      "SyncBatchNorm1d: ranks disagree on the call (rank 0: backward, rank 1: forward)");
  EXPECT_TRUE(Snapshot(sync) == before);
  sync.train();
  EXPECT_NO_THROW((void)sync.backward(Tensor::ones({4, 3})));  // still the training forward's
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, LocalVsSynchronizedBackward) {
  // Before any forward the mode decides: rank 1 (eval with running statistics) would run a local
  // backward, the others a synchronized one.
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SyncBatchNorm1d sync(3);
  sync.train(world_rank() != kOdd);
  expect_same_error_everywhere(
      [&] {
        (void)sync.backward(Tensor::ones({4, 3}));
      },
      "SyncBatchNorm1d: ranks disagree on the backward (rank 0: synchronized, after a forward "
      "with batch statistics, rank 1: local, after a forward with running statistics)");
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, BackwardBeforeForwardOnOneRank) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  for (const bool training : {true, false}) {
    SyncBatchNorm1d sync(3);
    sync.train(training);
    const Snapshot before(sync);
    const Tensor x = bn1d::randn({4, 3}, DType::Float32, 9);
    expect_same_error_everywhere(
        [&] {
          if (world_rank() == kOdd) {
            (void)sync.backward(Tensor::ones({4, 3}));
          } else {
            (void)sync.forward(x);
          }
        },
        "SyncBatchNorm1d: ranks disagree on the call (rank 0: forward, rank 1: backward)");
    EXPECT_TRUE(Snapshot(sync) == before);
    expect_valid_step(sync);
  }
}

TEST(SyncBatchNorm1dDisagreement, InvalidInputOnOneRankInEval) {
  // Eval with running statistics computes locally, but an error on one rank is still raised on
  // every rank (it used to leave the others' next collective waiting).
  const int bad = world_size() - 1;
  SyncBatchNorm1d sync(3);
  sync.eval();
  const Snapshot before(sync);
  const Tensor good = bn1d::randn({4, 3});
  const Tensor wrong = bn1d::randn({2, 3, 2, 2});
  expect_error_everywhere([&] { (void)sync.forward(world_rank() == bad ? wrong : good); }, bad,
                          "expected 2D or 3D input (got 4D input)");
  EXPECT_TRUE(Snapshot(sync) == before);
  EXPECT_NO_THROW((void)sync.forward(good));
  // The local backward too: a wrong grad_output shape on one rank.
  expect_error_everywhere(
      [&] {
        (void)sync.backward(Tensor::ones({world_rank() == bad ? 5 : 4, 3}));
      },
      bad, "grad_output");
  EXPECT_NO_THROW((void)sync.backward(Tensor::ones({4, 3})));
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, InvalidInputOnOneRankInTraining) {
  const int bad = world_size() - 1;
  SyncBatchNorm1d sync(3);
  const Snapshot before(sync);
  expect_error_everywhere(
      [&] {
        (void)sync.forward(bn1d::randn({4, world_rank() == bad ? 4 : 3}));
      },
      bad, "expected input with 3 channels (num_features), got 4 channels");
  EXPECT_TRUE(Snapshot(sync) == before);
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, MovedFromModuleOnOneRank) {
  // Rank 1 (by mistake) calls the moved-from module while the others call theirs: every rank
  // throws instead of the others waiting. The moved-to module then works on every rank.
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  for (const bool training : {true, false}) {
    SyncBatchNorm1d sync(3);
    sync.train(training);
    std::optional<SyncBatchNorm1d> moved;
    if (world_rank() == kOdd) moved.emplace(std::move(sync));
    SyncBatchNorm1d& live = world_rank() == kOdd ? *moved : sync;
    const Tensor x = bn1d::randn({4, 3}, DType::Float32, 10);
    try {
      (void)sync.forward(x);  // the moved-from one on rank 1
      ADD_FAILURE() << "no error on rank " << world_rank();
    } catch (const bn1d::Error& e) {
      const std::string what = e.what();
      const std::string expected = world_rank() == kOdd
                                       ? "SyncBatchNorm1d: use of a moved-from module"
                                       : "SyncBatchNorm1d: rank 1 failed: it called a moved-from "
                                         "module";
      EXPECT_NE(what.find(expected), std::string::npos) << "rank " << world_rank() << ": " << what;
    }
    if (world_rank() == kOdd) {
      EXPECT_EQ(sync.comm(), MPI_COMM_NULL);
    }
    EXPECT_EQ(live.num_batches_tracked(), 0);
    expect_valid_step(live);
  }
}

TEST(SyncBatchNorm1dDisagreement, MovedFromModuleOnEveryRank) {
  // Any number of ranks, MPI_COMM_SELF included: a moved-from module throws, nothing waits.
  for (MPI_Comm comm : {MPI_COMM_WORLD, MPI_COMM_SELF}) {
    SyncBatchNorm1d sync(3, comm);
    SyncBatchNorm1d moved(std::move(sync));
    expect_same_error_everywhere(
        [&] {
          (void)sync.forward(bn1d::randn({4, 3}));
        },
        "SyncBatchNorm1d: use of a moved-from module");
    expect_same_error_everywhere(
        [&] {
          (void)sync.backward(Tensor::ones({4, 3}));
        },
        "SyncBatchNorm1d: use of a moved-from module");
    EXPECT_EQ(sync.comm(), MPI_COMM_NULL);
    EXPECT_NE(moved.comm(), MPI_COMM_NULL);
    EXPECT_NO_THROW((void)moved.forward(bn1d::randn({4, 3})));
    EXPECT_EQ(moved.num_batches_tracked(), 1);
  }
}

}  // namespace
}  // namespace bn1d::dist_test
