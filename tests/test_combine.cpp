// The training step's combiner (combine.hpp): a module whose statistics are combined with another
// participant's gives the results of one module on both participants' batch, and a participant
// that fails is seen by the combiner before anything changes.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

// Two participants in one process: the other participant's partial results are given, and the
// outcomes this participant reported are recorded.
class PairCombiner final : public StatsCombiner {
 public:
  BatchStats other_stats;
  GradStats other_grads;
  std::vector<StepFailure> seen;

  const BatchStats& combine_stats(const StepConfig&, const BatchStats& local,
                                  const LocalOutcome& outcome) override {
    seen.push_back(outcome.failure);
    if (outcome.error) std::rethrow_exception(outcome.error);
    const std::vector<BatchStats> parts{local, other_stats};
    global_stats_ = bn1d::combine_stats(parts);
    return global_stats_;
  }
  const GradStats& combine_grads(const StepConfig&, const GradStats& local,
                                 const LocalOutcome& outcome) override {
    seen.push_back(outcome.failure);
    if (outcome.error) std::rethrow_exception(outcome.error);
    const std::vector<GradStats> parts{local, other_grads};
    global_grads_ = combine_grad_stats(parts);
    return global_grads_;
  }

 private:
  BatchStats global_stats_;
  GradStats global_grads_;
};

TEST(Combine, TwoParticipantsMatchOneModuleOnTheWholeBatch) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const int64_t N = 7, C = 3, L = 4, split = 3;
    const Tensor x = randn({N, C, L}, dtype, 11), dy = randn({N, C, L}, dtype, 12);
    BatchNorm1d whole(BatchNorm1dOptions(C).dtype(dtype));
    whole.weight().copy_from(randn({C}, dtype, 13));
    BatchNorm1d part(whole);
    const Tensor y_whole = whole.forward(x);
    const BatchNorm1d::Gradients g_whole = whole.backward(dy);

    PairCombiner combiner;
    combiner.other_stats = batch_stats(rows(x, split, N));
    Tensor y;
    part.forward(rows(x, 0, split), y, combiner);
    EXPECT_TRUE(all_close(y, values(rows(y_whole, 0, split))));
    EXPECT_TRUE(all_close(part.running_mean(), values(whole.running_mean())));
    EXPECT_TRUE(all_close(part.running_var(), values(whole.running_var())));
    EXPECT_EQ(part.num_batches_tracked(), 1);

    // The other participant's sums use the global normalization, as a real peer's would.
    const BatchStats global = combine_stats(
        std::vector<BatchStats>{batch_stats(rows(x, 0, split)), batch_stats(rows(x, split, N))});
    const Normalization norm = normalization_from_batch(global, 1e-5);
    combiner.other_grads = backward_stats(rows(dy, split, N), rows(x, split, N), norm);
    BatchNorm1d::Gradients g;
    part.backward(rows(dy, 0, split), g, combiner);
    const double scale = max_abs(values(dy));
    EXPECT_TRUE(all_close(g.input, values(rows(g_whole.input, 0, split)), scale));
    // Weight and bias gradients are this participant's own contributions.
    const BatchNormGradients local = batch_norm_backward_params(
        backward_stats(rows(dy, 0, split), rows(x, 0, split), norm), norm, dtype);
    EXPECT_TRUE(all_close(g.weight, values(local.weight), scale * N * L));
    EXPECT_TRUE(all_close(g.bias, values(local.bias), scale * N * L));
    EXPECT_EQ(combiner.seen, (std::vector<StepFailure>{StepFailure::None, StepFailure::None}));
  }
}

TEST(Combine, FailuresReachTheCombinerAndChangeNothing) {
  BatchNorm1d m(3);
  PairCombiner combiner;
  combiner.other_stats = batch_stats(randn({4, 3}));
  Tensor y;
  BatchNorm1d::Gradients g;
  EXPECT_TRUE(throws_error(
      [&] {
        m.backward(Tensor::ones({4, 3}), g, combiner);
      },
      "BatchNorm1d(3): backward called before forward"));
  EXPECT_TRUE(throws_error([&] { m.forward(randn({2, 3, 2, 2}), y, combiner); }, "4D input"));
  EXPECT_TRUE(throws_error(
      [&] {
        m.forward(randn({4, 3}, DType::Float64), y, combiner);
      },
      "expected a float32 input"));
  EXPECT_TRUE(throws_error([&] { m.forward(randn({4, 5}), y, combiner); }, "got 5 channels"));
  m.weight() = Tensor::ones({2});
  EXPECT_TRUE(throws_error([&] { m.forward(randn({4, 3}), y, combiner); }, "weight"));
  m.weight() = Tensor::ones({3});
  EXPECT_EQ(combiner.seen,
            (std::vector<StepFailure>{StepFailure::NoForward, StepFailure::InvalidInput,
                                      StepFailure::WrongDtype, StepFailure::WrongChannels,
                                      StepFailure::InvalidState}));
  EXPECT_EQ(m.num_batches_tracked(), 0);
  EXPECT_EQ(values(m.running_mean()), std::vector<double>(3, 0.0));

  // A local batch of one row is fine when the combined batch has more.
  m.forward(randn({1, 3}), y, combiner);
  EXPECT_EQ(m.num_batches_tracked(), 1);
  m.forward(randn({4, 3}), y, combiner);
  EXPECT_TRUE(throws_error([&] { m.backward(Tensor::ones({5, 3}), g, combiner); }, "grad_output"));
  EXPECT_EQ(combiner.seen.back(), StepFailure::WrongGradShape);
}

TEST(Combine, EvalWithRunningStatisticsCombinesNothing) {
  BatchNorm1d m(3);
  m.eval();
  PairCombiner combiner;
  Tensor y;
  BatchNorm1d::Gradients g;
  m.forward(randn({4, 3}), y, combiner);
  m.backward(Tensor::ones({4, 3}), g, combiner);
  EXPECT_TRUE(combiner.seen.empty());
}

TEST(Combine, FailureDescriptionsNameTheProblem) {
  EXPECT_STREQ(describe(StepFailure::WrongChannels), "input with the wrong channel count");
  EXPECT_STREQ(describe(StepFailure::NoForward), "backward called before forward");
  EXPECT_STREQ(describe(static_cast<StepFailure>(99)), "internal error");
}

}  // namespace
}  // namespace bn1d::test
