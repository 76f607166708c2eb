// The functional API and its separable steps: they compose to the module's results, and a
// batch split into parts (as across ranks) gives the whole batch's statistics and gradients.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>

#include "format.hpp"
#include "test_util.hpp"

namespace bn1d::test {
namespace {

TEST(Functional, BatchNormMatchesModule) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const Tensor x = randn({6, 4, 5}, dtype, 1);
    BatchNorm1d m(BatchNorm1dOptions(4).dtype(dtype));
    m.weight().copy_from(randn({4}, dtype, 2));
    const Tensor rm = Tensor::zeros({4}, dtype), rv = Tensor::ones({4}, dtype);
    const Tensor y = batch_norm(x, rm, rv, m.weight(), m.bias(), /*training=*/true, 0.1, 1e-5);
    EXPECT_EQ(values(y), values(m(x)));
    EXPECT_EQ(values(rm), values(m.running_mean()));
    EXPECT_EQ(values(rv), values(m.running_var()));
    m.eval();
    EXPECT_EQ(values(batch_norm(x, rm, rv, m.weight(), m.bias(), false)), values(m(x)));
    // No running statistics and no affine parameters: plain normalization.
    BatchNorm1d plain(BatchNorm1dOptions(4).dtype(dtype).affine(false).track_running_stats(false));
    EXPECT_EQ(values(batch_norm(x, {}, {}, {}, {}, true)), values(plain(x)));
  }
}

TEST(Functional, Errors) {
  const Tensor x = randn({4, 3});
  EXPECT_TRUE(throws_error([&] { batch_norm(x, {}, {}, {}, {}, false); },
                           "running_mean and running_var must be defined in evaluation mode"));
  EXPECT_TRUE(throws_error([&] { batch_norm(x, Tensor::zeros({3}), {}, {}, {}, true); },
                           "both defined or both undefined"));
  EXPECT_TRUE(throws_error(
      [&] { batch_norm(x, Tensor::zeros({4}), Tensor::ones({4}), {}, {}, true); },
      "running_mean: expected a float32 tensor of shape [3] (one value per channel, for a float32 "
      "input), "
      "got a float32 tensor of shape [4]"));
  EXPECT_TRUE(
      throws_error([&] { batch_norm(x, {}, {}, Tensor::ones({3}, DType::Float64), {}, true); },
                   "weight: expected a float32 tensor of shape [3]"));
  EXPECT_TRUE(throws_error([&] { batch_norm(x, {}, {}, {}, {}, true, 2.0); },
                           "momentum: expected a value in [0, 1], got 2.0"));
  EXPECT_TRUE(throws_error(
      [&] {
        batch_norm(randn({1, 3}), {}, {}, {}, {}, true);
      },
      "Expected more than 1 value per channel when training"));
  // Found by fuzz_validation: an empty (N, 0, L) view whose N·L overflows int64.
  float dummy = 0;
  const Tensor huge_empty =
      Tensor::from_blob(&dummy, {INT64_MAX / 2, 0, 7}, {1, 1, 1}, DType::Float32);
  EXPECT_TRUE(throws_error([&] { batch_stats(huge_empty); },
                           "give more values per channel than int64 holds"));
  const BatchStats one = batch_stats(randn({1, 3}));
  EXPECT_TRUE(
      throws_error([&] { update_running_stats(Tensor::zeros({3}), Tensor::ones({3}), one, 0.1); },
                   "more than 1 value per channel, got count 1"));
  EXPECT_TRUE(throws_error(
      [&] {
        normalization_from_batch(batch_stats(Tensor::zeros({0, 3})), 1e-5);
      },
      "got count 0"));
  const BatchStats parts[] = {batch_stats(x), batch_stats(randn({4, 2}))};
  EXPECT_TRUE(throws_error([&] { combine_stats(parts); },
                           "part 1 mean: expected a float64 tensor of shape [3]"));
  EXPECT_TRUE(throws_error([&] { combine_stats({}); }, "expected at least one part"));
}

// Zero channels with rows (found by fuzz_validation: the cols kernels divided by C and formed row
// pointers from meaningless strides; routing now sends views without values to no kernel): every
// step gives empty results; under the sanitizers any undefined behaviour fails the test.
TEST(Functional, ZeroChannelsGiveEmptyResults) {
  for (const Shape& sizes : {Shape{4, 0}, Shape{4, 0, 3}}) {
    SCOPED_TRACE(format_shape(sizes));
    for (DType dtype : {DType::Float32, DType::Float64}) {
      const Tensor x = Tensor::empty(sizes, dtype);
      const BatchStats stats = batch_stats(x);
      EXPECT_EQ(stats.mean.numel(), 0);
      const Normalization norm = normalization_from_batch(stats, 1e-5);
      EXPECT_EQ(batch_norm_apply(x, norm, Tensor(), Tensor()).numel(), 0);
      const GradStats grad = backward_stats(x, x, norm);
      EXPECT_EQ(grad.sum_dy.numel(), 0);
      EXPECT_EQ(batch_norm_backward_input(x, x, norm, Tensor(), grad, true).numel(), 0);
    }
  }
}

TEST(Functional, SplitBatchStatisticsCombineToTheWhole) {
  const Tensor x = randn({11, 3, 4}, DType::Float64, 3);
  const int64_t cuts[] = {0, 4, 4, 5, 11};  // parts of 4, 0 (empty), 1 and 6 rows
  std::vector<BatchStats> parts;
  for (int i = 0; i + 1 < 5; ++i) parts.push_back(batch_stats(rows(x, cuts[i], cuts[i + 1])));
  const BatchStats whole = batch_stats(x);
  const BatchStats combined = combine_stats(parts);
  EXPECT_EQ(combined.count, 44);
  EXPECT_TRUE(all_close(combined.mean, values(whole.mean)));
  EXPECT_TRUE(all_close(combined.m2, values(whole.m2)));
}

TEST(Functional, SeparableStepsReproduceTheModuleForwardAndBackward) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const Tensor x = randn({9, 5, 3}, dtype, 4);
    const Tensor dy = randn({9, 5, 3}, dtype, 5);
    BatchNorm1d m(BatchNorm1dOptions(5).dtype(dtype));
    m.weight().copy_from(randn({5}, dtype, 6));
    const Tensor y = m(x);
    const BatchNorm1d::Gradients g = m.backward(dy);

    // The same computation as two "ranks" holding rows [0, 4) and [4, 9).
    const Tensor xa = rows(x, 0, 4), xb = rows(x, 4, 9), dya = rows(dy, 0, 4), dyb = rows(dy, 4, 9);
    const BatchStats stats[] = {batch_stats(xa), batch_stats(xb)};
    const Normalization norm = normalization_from_batch(combine_stats(stats), 1e-5);
    const Tensor ya = batch_norm_apply(xa, norm, m.weight(), m.bias());
    const Tensor yb = batch_norm_apply(xb, norm, m.weight(), m.bias());
    const GradStats gstats[] = {backward_stats(dya, xa, norm), backward_stats(dyb, xb, norm)};
    const GradStats global = combine_grad_stats(gstats);
    const Tensor dxa = batch_norm_backward_input(dya, xa, norm, m.weight(), global, true);
    const Tensor dxb = batch_norm_backward_input(dyb, xb, norm, m.weight(), global, true);
    const BatchNormGradients params = batch_norm_backward_params(global, norm, dtype);

    std::vector<double> y_parts = values(ya), dx_parts = values(dxa);
    for (double v : values(yb)) y_parts.push_back(v);
    for (double v : values(dxb)) dx_parts.push_back(v);
    EXPECT_TRUE(all_close(y_parts, values(y), dtype));
    EXPECT_TRUE(all_close(dx_parts, values(g.input), dtype));
    EXPECT_TRUE(all_close(params.weight, values(g.weight)));
    EXPECT_TRUE(all_close(params.bias, values(g.bias)));
  }
}

}  // namespace
}  // namespace bn1d::test
