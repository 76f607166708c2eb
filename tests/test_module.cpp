// BatchNorm1d semantics, one behaviour per test: construction, training/eval forward, running
// statistics conventions, backward, errors (PyTorch's texts) and the strong exception guarantee.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <sstream>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

// Everything observable about a module, to check that a failed call changed nothing.
std::vector<double> snapshot(const BatchNorm1d& m) {
  std::vector<double> s{static_cast<double>(m.num_batches_tracked()), m.is_training() ? 1.0 : 0.0};
  for (const Tensor* t : {&m.weight(), &m.bias(), &m.running_mean(), &m.running_var()}) {
    if (t->defined())
      for (double v : values(*t)) s.push_back(v);
  }
  return s;
}

TEST(Module, ConstructionDefaults) {
  BatchNorm1d m(4);
  EXPECT_TRUE(m.is_training());
  EXPECT_EQ(values(m.weight()), std::vector<double>(4, 1.0));
  EXPECT_EQ(values(m.bias()), std::vector<double>(4, 0.0));
  EXPECT_EQ(values(m.running_mean()), std::vector<double>(4, 0.0));
  EXPECT_EQ(values(m.running_var()), std::vector<double>(4, 1.0));
  EXPECT_EQ(m.num_batches_tracked(), 0);
  EXPECT_EQ(m.weight().dtype(), DType::Float32);
  EXPECT_EQ(m.options().eps(), 1e-5);
  EXPECT_EQ(m.options().momentum(), 0.1);
  BatchNorm1d plain(BatchNorm1dOptions(4).affine(false).track_running_stats(false));
  EXPECT_FALSE(plain.weight().defined());
  EXPECT_FALSE(plain.bias().defined());
  EXPECT_FALSE(plain.running_mean().defined());
  EXPECT_FALSE(plain.running_var().defined());
}

TEST(Module, InvalidOptionsAreErrors) {
  EXPECT_TRUE(throws_error([] { BatchNorm1d m(0); },
                           "num_features: expected a positive channel count, got 0"));
  EXPECT_TRUE(throws_error([] { BatchNorm1d m(-3); }, "got -3"));
  EXPECT_TRUE(throws_error([] { BatchNorm1d m(BatchNorm1dOptions(2).eps(-1e-5)); },
                           "eps: expected a finite value >= 0, got -1e-05"));
  EXPECT_TRUE(throws_error([] { BatchNorm1d m(BatchNorm1dOptions(2).eps(NAN)); }, "eps"));
  EXPECT_TRUE(throws_error([] { BatchNorm1d m(BatchNorm1dOptions(2).eps(INFINITY)); }, "eps"));
  EXPECT_TRUE(throws_error([] { BatchNorm1d m(BatchNorm1dOptions(2).momentum(1.5)); },
                           "momentum: expected a value in [0, 1], got 1.5"));
  EXPECT_TRUE(
      throws_error([] { BatchNorm1d m(BatchNorm1dOptions(2).momentum(-0.1)); }, "momentum"));
  EXPECT_TRUE(throws_error([] { BatchNorm1d m(BatchNorm1dOptions(2).momentum(NAN)); }, "momentum"));
  EXPECT_TRUE(
      throws_error([] { BatchNorm1d m(BatchNorm1dOptions(2).dtype(DType::Int64)); },
                   "dtype: expected dtype float32, float64, bfloat16 or float16, got int64"));
}

TEST(Module, PrintsLikePyTorch) {
  std::ostringstream a, b;
  a << BatchNorm1d(100);
  EXPECT_EQ(a.str(),
            "BatchNorm1d(100, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)");
  b << BatchNorm1d(BatchNorm1dOptions(3)
                       .eps(0.001)
                       .momentum(std::nullopt)
                       .affine(false)
                       .track_running_stats(false));
  EXPECT_EQ(b.str(),
            "BatchNorm1d(3, eps=0.001, momentum=None, affine=false, track_running_stats=false)");
}

// x = 1, 2, 3, 4 in one channel: mean 2.5, biased variance 1.25, unbiased variance 5/3.
TEST(Module, TrainingForwardByHand) {
  BatchNorm1d m(BatchNorm1dOptions(1).dtype(DType::Float64));
  const Tensor y = m(make_tensor({1, 2, 3, 4}, {4, 1}, DType::Float64));
  const double s = std::sqrt(1.25 + 1e-5);
  EXPECT_TRUE(all_close(y, {-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s}));
  EXPECT_TRUE(all_close(m.running_mean(), {0.9 * 0 + 0.1 * 2.5}));
  EXPECT_TRUE(all_close(m.running_var(), {0.9 * 1 + 0.1 * (5.0 / 3.0)}));  // unbiased
  EXPECT_EQ(m.num_batches_tracked(), 1);
}

// R torch's own test of nn_batch_norm1d: ones(2, 1), 10 training steps.
TEST(Module, RTorchCheck) {
  BatchNorm1d m(1);
  const Tensor x = Tensor::ones({2, 1});
  for (int i = 0; i < 10; ++i) m(x);
  EXPECT_NEAR(m.running_mean().data<float>()[0], 0.6513, 5e-5);
  EXPECT_NEAR(m.running_var().data<float>()[0], 0.3487, 5e-5);
  m.eval();
  EXPECT_NEAR(m(x).data<float>()[0], 0.5905, 5e-5);
  EXPECT_EQ(m.num_batches_tracked(), 10);
}

TEST(Module, CumulativeMovingAverageWithMomentumNone) {
  BatchNorm1d m(BatchNorm1dOptions(1).momentum(std::nullopt).dtype(DType::Float64));
  const double batches[3][2] = {{1, 3}, {5, 9}, {-2, 0}};  // means 2, 7, -1; unbiased vars 2, 8, 2
  for (const auto& b : batches) m(make_tensor({b[0], b[1]}, {2, 1}, DType::Float64));
  EXPECT_TRUE(all_close(m.running_mean(), {(2.0 + 7.0 - 1.0) / 3}));
  // The first update has factor 1/1 and replaces the initial variance 1 entirely.
  EXPECT_TRUE(all_close(m.running_var(), {(2.0 + 8.0 + 2.0) / 3}));
  EXPECT_EQ(m.num_batches_tracked(), 3);
}

TEST(Module, MomentumZeroAndOne) {
  BatchNorm1d frozen(BatchNorm1dOptions(1).momentum(0.0).dtype(DType::Float64));
  BatchNorm1d latest(BatchNorm1dOptions(1).momentum(1.0).dtype(DType::Float64));
  const Tensor x = make_tensor({1, 3}, {2, 1}, DType::Float64);
  frozen(x);
  latest(x);
  EXPECT_TRUE(all_close(frozen.running_mean(), {0}));
  EXPECT_TRUE(all_close(frozen.running_var(), {1}));
  EXPECT_EQ(frozen.num_batches_tracked(), 1);
  EXPECT_TRUE(all_close(latest.running_mean(), {2}));
  EXPECT_TRUE(all_close(latest.running_var(), {2}));
}

TEST(Module, ConstantChannelWithZeroEpsGivesZeroNotNaN) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    BatchNorm1d m(BatchNorm1dOptions(2).eps(0.0).dtype(dtype));
    const Tensor y = m(make_tensor({5, 1, 5, 2, 5, 3}, {3, 2}, dtype));
    const std::vector<double> v = values(y);
    EXPECT_EQ(v[0], 0.0);
    EXPECT_EQ(v[2], 0.0);
    EXPECT_EQ(v[4], 0.0);
    const auto g = m.backward(Tensor::ones({3, 2}, dtype));
    for (double d : values(g.input)) EXPECT_FALSE(std::isnan(d));
  }
}

TEST(Module, EvalUsesRunningStatistics) {
  BatchNorm1d m(BatchNorm1dOptions(2).dtype(DType::Float64));
  m.running_mean().copy_from(make_tensor({1, -1}, {2}, DType::Float64));
  m.running_var().copy_from(make_tensor({4, 0.25}, {2}, DType::Float64));
  m.weight().copy_from(make_tensor({2, 1}, {2}, DType::Float64));
  m.bias().copy_from(make_tensor({0.5, 0}, {2}, DType::Float64));
  m.eval();
  const Tensor y = m(make_tensor({3, 0}, {1, 2}, DType::Float64));  // N = 1 is fine in eval
  EXPECT_TRUE(all_close(y, {2 * 2 / std::sqrt(4 + 1e-5) + 0.5, 1 / std::sqrt(0.25 + 1e-5)}));
  EXPECT_EQ(m.num_batches_tracked(), 0);
  EXPECT_TRUE(all_close(m.running_mean(), {1, -1}));
}

// Eval forwards keep the last eval call's normalization while the running statistics keep
// their bytes: every change is seen, in place through the accessors or their data, by a
// training step or load_state_dict, by a replaced (strided) tensor, and an empty batch in
// between keeps nothing; a running variance made negative is still an error; results always
// equal a fresh module's.
TEST(Module, EvalSeesEveryChangeOfTheRunningStatistics) {
  const Tensor x = randn({16, 5}, DType::Float32, 1);
  BatchNorm1d m(5);
  m.eval();
  auto fresh_eval = [&] {
    BatchNorm1d f(5);
    f.load_state_dict(m.state_dict());
    f.eval();
    return values(f(x));
  };
  Tensor y;
  m.forward(x, y);
  EXPECT_EQ(values(y), fresh_eval());
  m.running_var().data<float>()[3] = 9.0f;  // in place, through the data pointer
  m.forward(x, y);
  EXPECT_EQ(values(y), fresh_eval());
  EXPECT_FLOAT_EQ(static_cast<float>(values(y)[3]), values(x)[3] / std::sqrt(9.0f + 1e-5f));
  m.running_mean().copy_from(randn({5}, DType::Float32, 2));
  m.forward(x, y);
  EXPECT_EQ(values(y), fresh_eval());
  m.train();
  m(x);  // a training step updates the running statistics
  m.eval();
  m.forward(x, y);
  EXPECT_EQ(values(y), fresh_eval());
  BatchNorm1d other(5);
  other.running_var().copy_from(Tensor::full({5}, 4.0));
  m.load_state_dict(other.state_dict());
  m.forward(x, y);
  EXPECT_EQ(values(y), fresh_eval());
  std::vector<float> strided(10, 0.25f);  // every other element of a buffer: not contiguous
  m.running_var() = Tensor::from_blob(strided.data(), {5}, {2}, DType::Float32);
  m.forward(x, y);
  EXPECT_EQ(values(y), fresh_eval());
  strided[4] = 16.0f;  // running_var[2]
  m.forward(x, y);
  EXPECT_EQ(values(y), fresh_eval());
  m.running_var() = Tensor::ones({5});
  m.forward(x, y);
  Tensor empty_out;
  m.forward(Tensor::empty({0, 5}), empty_out);  // an empty batch normalizes nothing
  m.forward(x, y);
  EXPECT_EQ(values(y), fresh_eval());
  m.running_var().data<float>()[1] = -1.0f;
  EXPECT_TRUE(throws_error([&] { m.forward(x, y); }, "running_var[1] = -1.0"));
}

// With momentum 0 a training step leaves the running statistics' bytes as they were, but its
// forward normalized with batch statistics: the next eval forward must not reuse that.
TEST(Module, EvalAfterATrainingStepThatKeptTheRunningStatistics) {
  const Tensor x = randn({16, 5}, DType::Float32, 1);
  BatchNorm1d m(BatchNorm1dOptions(5).momentum(0.0));
  m.eval();
  const std::vector<double> before = values(m(x));
  m.train();
  m(x);
  m.eval();
  EXPECT_EQ(values(m(x)), before);
}

TEST(Module, WithoutTrackingBatchStatisticsInBothModes) {
  BatchNorm1d m(BatchNorm1dOptions(1).track_running_stats(false).dtype(DType::Float64));
  const Tensor x = make_tensor({1, 2, 3, 4}, {4, 1}, DType::Float64);
  const std::vector<double> train_out = values(m(x));
  m.eval();
  EXPECT_EQ(values(m(x)), train_out);
  EXPECT_EQ(m.num_batches_tracked(), 0);
  EXPECT_TRUE(throws_error(
      [&] {
        m(make_tensor({1}, {1, 1}, DType::Float64));
      },
      "Expected more than 1 value per channel when training, got input size [1, 1]"));
  EXPECT_EQ(m.state_dict().size(), 2u);  // weight, bias
}

TEST(Module, AffineFalseHasNoParameterGradients) {
  BatchNorm1d m(BatchNorm1dOptions(3).affine(false));
  m(randn({4, 3, 2}));
  const auto g = m.backward(randn({4, 3, 2}, DType::Float32, 1));
  EXPECT_TRUE(g.input.defined());
  EXPECT_FALSE(g.weight.defined());
  EXPECT_FALSE(g.bias.defined());
}

TEST(Module, ForwardErrorsUsePyTorchText) {
  BatchNorm1d m(100);
  EXPECT_TRUE(throws_error(
      [&] {
        m(Tensor::zeros({2, 100, 3, 4}));
      },
      "expected 2D or 3D input (got 4D input)"));
  EXPECT_TRUE(
      throws_error([&] { m(Tensor::zeros({100})); }, "expected 2D or 3D input (got 1D input)"));
  EXPECT_TRUE(throws_error(
      [&] {
        m(randn({1, 100}));
      },
      "Expected more than 1 value per channel when training, got input size [1, 100]"));
  EXPECT_TRUE(throws_error([&] { m(randn({1, 100, 1})); }, "got input size [1, 100, 1]"));
  EXPECT_TRUE(throws_error(
      [&] {
        m(randn({20, 50}));
      },
      "expected input with 100 channels (num_features), got 50 channels"));
  EXPECT_TRUE(throws_error(
      [&] {
        m(randn({20, 100}, DType::Float64));
      },
      "expected a float32 input (the module's dtype), got float64"));
  EXPECT_TRUE(throws_error([&] { m(Tensor()); }, "input: expected a defined tensor"));
  EXPECT_TRUE(throws_error(
      [&] {
        m(Tensor::zeros({2, 100}, DType::Int64));
      },
      "input: expected dtype float32, float64, bfloat16 or float16, got int64"));
  // N = 1 is allowed when the values per channel come from L.
  EXPECT_NO_THROW(m(randn({1, 100, 2})));
}

TEST(Module, BackwardErrors) {
  BatchNorm1d m(3);
  EXPECT_TRUE(throws_error(
      [&] {
        m.backward(Tensor::zeros({2, 3}));
      },
      "backward called before forward"));
  m(randn({4, 3}));
  EXPECT_TRUE(throws_error(
      [&] {
        m.backward(Tensor::zeros({4, 3, 1}));
      },
      "grad_output: expected a float32 tensor of size [4, 3]"));
  EXPECT_TRUE(throws_error(
      [&] {
        m.backward(Tensor::zeros({4, 3}, DType::Float64));
      },
      "got a float64 tensor of size [4, 3]"));
  EXPECT_TRUE(throws_error([&] { m.backward(Tensor()); }, "got an undefined tensor"));
}

TEST(Module, FailedCallsChangeNothing) {
  BatchNorm1d m(4);
  m(randn({8, 4}, DType::Float32, 3));
  const std::vector<double> before = snapshot(m);
  const Tensor bad_inputs[] = {randn({1, 4}), randn({8, 5}), randn({8, 4}, DType::Float64),
                               Tensor::zeros({8, 4, 1, 1})};
  for (const Tensor& x : bad_inputs) {
    EXPECT_THROW(m(x), Error);
    EXPECT_EQ(snapshot(m), before);  // torch would have incremented num_batches_tracked
  }
  // A module whose buffer was replaced by a wrong-shaped tensor refuses to run, unchanged.
  const Tensor saved = m.running_var();
  m.running_var() = Tensor::ones({3});
  EXPECT_THROW(m(randn({8, 4})), Error);
  EXPECT_EQ(m.num_batches_tracked(), 1);
  m.running_var() = saved;
  // Negative running variance in eval mode is an error, not NaN.
  m.eval();
  m.running_var().data<float>()[2] = -1.0f;
  EXPECT_TRUE(throws_error(
      [&] {
        m(randn({8, 4}));
      },
      "running_var: expected non-negative variances, got running_var[2] = -1.0"));
}

TEST(Module, EmptyBatchReturnsEmptyAndChangesNothing) {
  for (const Shape& shape : {Shape{0, 4}, Shape{0, 4, 7}, Shape{3, 4, 0}}) {
    BatchNorm1d m(4);
    m(randn({5, 4}));
    const std::vector<double> before = snapshot(m);
    const Tensor y = m(Tensor::zeros(shape));
    EXPECT_EQ(y.sizes(), shape);
    EXPECT_EQ(snapshot(m), before);
    const auto g = m.backward(Tensor::zeros(shape));
    EXPECT_EQ(g.input.sizes(), shape);
    EXPECT_EQ(values(g.weight), std::vector<double>(4, 0.0));
    EXPECT_EQ(values(g.bias), std::vector<double>(4, 0.0));
  }
}

TEST(Module, ResetRestoresInitialState) {
  BatchNorm1d m(3);
  const Tensor view = m.running_mean();  // shares storage: resets must write in place
  m(randn({6, 3}, DType::Float32, 5));
  m.weight().data<float>()[0] = 7;
  m.reset_running_stats();
  EXPECT_EQ(values(view), std::vector<double>(3, 0.0));
  EXPECT_EQ(values(m.running_var()), std::vector<double>(3, 1.0));
  EXPECT_EQ(m.num_batches_tracked(), 0);
  EXPECT_EQ(m.weight().data<float>()[0], 7);
  m.reset_parameters();
  EXPECT_EQ(values(m.weight()), std::vector<double>(3, 1.0));
}

TEST(Module, CopiesAreIndependent) {
  BatchNorm1d a(3);
  BatchNorm1d b = a;
  b(randn({6, 3}));
  EXPECT_EQ(a.num_batches_tracked(), 0);
  EXPECT_EQ(values(a.running_mean()), std::vector<double>(3, 0.0));
  EXPECT_NE(values(b.running_mean()), std::vector<double>(3, 0.0));
}

}  // namespace
}  // namespace bn1d::test
