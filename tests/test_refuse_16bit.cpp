// SPDX-License-Identifier: MIT
// The 16-bit dtypes have no kernels yet: every compute entry point refuses them with an Error
// naming the argument, the dtypes expected and the one given, before anything changes.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <string>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

class Refuse16 : public ::testing::TestWithParam<DType> {
 protected:
  DType half() const { return GetParam(); }
  std::string got() const { return std::string("float32 or float64, got ") + dtype_name(half()); }
  Tensor half_input() const { return randn({4, 3, 2}, half(), 1); }
  Tensor f32_input() const { return randn({4, 3, 2}, DType::Float32, 1); }
};

TEST_P(Refuse16, ModuleConstruction) {
  EXPECT_TRUE(throws_error([&] { BatchNorm1d m(BatchNorm1dOptions(3).dtype(half())); },
                           "dtype: expected " + got()));
}

TEST_P(Refuse16, ModuleForward) {
  BatchNorm1d m(3);
  EXPECT_TRUE(
      throws_error([&] { (void)m.forward(half_input()); }, "input: expected dtype " + got()));
  Tensor out;
  EXPECT_TRUE(
      throws_error([&] { m.forward(half_input(), out); }, "input: expected dtype " + got()));
  EXPECT_EQ(m.num_batches_tracked(), 0);
  EXPECT_EQ(values(m.running_mean()), std::vector<double>(3, 0.0));
  m.eval();
  EXPECT_TRUE(
      throws_error([&] { (void)m.forward(half_input()); }, "input: expected dtype " + got()));
}

TEST_P(Refuse16, ModuleInfer) {
  BatchNorm1d m(BatchNorm1dOptions(3).dtype(DType::Float64));
  EXPECT_TRUE(throws_error([&] { (void)m.infer(half_input()); }, "input: expected dtype " + got()));
}

TEST_P(Refuse16, ModuleBackward) {
  BatchNorm1d m(3);
  const Tensor x = f32_input();
  (void)m.forward(x);
  EXPECT_TRUE(
      throws_error([&] { (void)m.backward(half_input()); }, "grad_output: expected a float32"));
  EXPECT_NO_THROW((void)m.backward(f32_input()));  // the refusal left the module usable
}

TEST_P(Refuse16, FunctionalForwardSteps) {
  EXPECT_TRUE(
      throws_error([&] { (void)batch_stats(half_input()); }, "input: expected dtype " + got()));
  const Normalization norm = normalization_from_batch(batch_stats(f32_input()), 1e-5);
  EXPECT_TRUE(throws_error([&] { (void)batch_norm_apply(half_input(), norm, Tensor(), Tensor()); },
                           "input: expected dtype " + got()));
  const Tensor ones = Tensor::ones({3}, half()), zeros = Tensor::zeros({3}, half());
  EXPECT_TRUE(throws_error([&] { (void)normalization_from_running(zeros, ones, 1e-5); },
                           "running_mean: expected dtype " + got()));
  const BatchStats stats = batch_stats(f32_input());
  EXPECT_TRUE(throws_error([&] { update_running_stats(zeros, ones, stats, 0.1); },
                           "running_mean: expected dtype " + got()));
  EXPECT_EQ(values(ones), std::vector<double>(3, 1.0));  // not updated
}

TEST_P(Refuse16, FunctionalBatchNorm) {
  const Tensor mean = Tensor::zeros({3}, half()), var = Tensor::ones({3}, half());
  for (const bool training : {true, false}) {
    EXPECT_TRUE(throws_error(
        [&] { (void)batch_norm(half_input(), mean, var, Tensor(), Tensor(), training); },
        "input: expected dtype " + got()));
  }
  // float32 input with 16-bit running statistics or parameters: refused as of the wrong dtype.
  EXPECT_TRUE(
      throws_error([&] { (void)batch_norm(f32_input(), mean, var, Tensor(), Tensor(), false); },
                   "running_mean"));
  EXPECT_TRUE(throws_error(
      [&] {
        (void)batch_norm(f32_input(), Tensor(), Tensor(), Tensor::ones({3}, half()), Tensor(),
                         true);
      },
      std::string("got a ") + dtype_name(half())));
  EXPECT_EQ(values(mean), std::vector<double>(3, 0.0));
}

TEST_P(Refuse16, FunctionalBackward) {
  const Tensor x = f32_input();
  const Normalization norm = normalization_from_batch(batch_stats(x), 1e-5);
  EXPECT_TRUE(throws_error([&] { (void)backward_stats(half_input(), half_input(), norm); },
                           "input: expected dtype " + got()));
  EXPECT_TRUE(throws_error([&] { (void)backward_stats(half_input(), x, norm); }, "grad_output"));
  const GradStats g = backward_stats(f32_input(), x, norm);
  EXPECT_TRUE(throws_error(
      [&] { (void)batch_norm_backward_input(half_input(), half_input(), norm, Tensor(), g, true); },
      "input: expected dtype " + got()));
  EXPECT_TRUE(throws_error([&] { (void)batch_norm_backward_params(g, norm, half()); },
                           "dtype: expected " + got()));
  EXPECT_TRUE(throws_error(
      [&] { (void)batch_norm_backward(half_input(), half_input(), norm, Tensor(), true, false); },
      "input: expected dtype " + got()));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Refuse16, ::testing::Values(DType::BFloat16, DType::Float16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace bn1d::test
