// SPDX-License-Identifier: MIT
// fold_into_preceding / fold_into_following: hand-derived cases (exact values), random cases
// against a long-double loop written here, strided inputs, every error.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

// An eval-mode BatchNorm1d with the given state (empty gamma: affine=false).
BatchNorm1d eval_bn(const std::vector<double>& gamma, const std::vector<double>& beta,
                    const std::vector<double>& mean, const std::vector<double>& var, double eps,
                    DType dtype = DType::Float32) {
  const auto C = static_cast<int64_t>(mean.size());
  BatchNorm1d bn(BatchNorm1dOptions(C).eps(eps).affine(!gamma.empty()).dtype(dtype));
  for (int64_t c = 0; c < C; ++c) {
    const auto i = static_cast<std::size_t>(c);
    if (!gamma.empty()) {
      store_as(bn.weight().raw_data(), c, gamma[i], dtype);
      store_as(bn.bias().raw_data(), c, beta[i], dtype);
    }
    store_as(bn.running_mean().raw_data(), c, mean[i], dtype);
    store_as(bn.running_var().raw_data(), c, var[i], dtype);
  }
  bn.eval();
  return bn;
}

// γ = [2, −1], β = [0.5, 1], μ = [1, 2], var = [3, 15], eps = 1: σ = [2, 4], γ/σ = [1, −0.25].
BatchNorm1d hand_bn(DType dtype = DType::Float32) {
  return eval_bn({2, -1}, {0.5, 1}, {1, 2}, {3, 15}, 1.0, dtype);
}

TEST(Fold, PrecedingLinearHandDerived) {
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    const Tensor w = make_tensor({1, 2, 3, 4, 8, -4}, {2, 3}, dtype);
    const Tensor b = make_tensor({5, 6}, {2}, dtype);
    const FoldedLinear f = fold_into_preceding(hand_bn(), w, b);
    // W' rows scaled by [1, −0.25]; b' = [1·(5 − 1) + 0.5, −0.25·(6 − 2) + 1].
    EXPECT_EQ(values(f.weight), (std::vector<double>{1, 2, 3, -1, -2, 1})) << dtype_name(dtype);
    EXPECT_EQ(values(f.bias), (std::vector<double>{4.5, 0})) << dtype_name(dtype);
    EXPECT_EQ(f.weight.dtype(), dtype);
    EXPECT_EQ(f.bias.dtype(), dtype);
    EXPECT_TRUE(f.weight.is_contiguous());
  }
}

TEST(Fold, PrecedingConv1dWithoutBiasHandDerived) {
  const Tensor w = make_tensor({1, 2, 4, 8}, {2, 1, 2}, DType::Float64);
  const FoldedLinear f = fold_into_preceding(hand_bn(DType::Float64), w, Tensor());
  EXPECT_EQ(f.weight.sizes(), (Shape{2, 1, 2}));
  EXPECT_EQ(values(f.weight), (std::vector<double>{1, 2, -1, -2}));
  // b = 0: b' = [1·(0 − 1) + 0.5, −0.25·(0 − 2) + 1].
  EXPECT_EQ(values(f.bias), (std::vector<double>{-0.5, 1.5}));
}

TEST(Fold, FollowingLinearHandDerived) {
  const Tensor w = make_tensor({1, 2, 4, -8}, {2, 2}, DType::Float32);
  const Tensor b = make_tensor({1, -1}, {2}, DType::Float32);
  const FoldedLinear f = fold_into_following(hand_bn(DType::Float64), w, b);
  // W' columns scaled by [1, −0.25]; β − γμ/σ = [−0.5, 1.5]; b' = b + W·[−0.5, 1.5].
  EXPECT_EQ(values(f.weight), (std::vector<double>{1, -0.5, 4, 2}));
  EXPECT_EQ(values(f.bias), (std::vector<double>{3.5, -15}));
  EXPECT_EQ(f.weight.dtype(), DType::Float32);
}

TEST(Fold, AffineFalseUsesGammaOneBetaZero) {
  // σ = sqrt(3 + 1) = 2, μ = 4: W' = W / 2, b' = (10 − 4) / 2 = 3.
  const BatchNorm1d bn = eval_bn({}, {}, {4}, {3}, 1.0);
  const FoldedLinear p = fold_into_preceding(bn, make_tensor({2, 6}, {1, 2}, DType::Float64),
                                             make_tensor({10}, {1}, DType::Float64));
  EXPECT_EQ(values(p.weight), (std::vector<double>{1, 3}));
  EXPECT_EQ(values(p.bias), (std::vector<double>{3}));
  // Following, no bias: W' = W / 2, b' = W·(−μ/σ) = [2, 6]·(−2) = [−4, −12].
  const FoldedLinear q =
      fold_into_following(bn, make_tensor({2, 6}, {2, 1}, DType::Float64), Tensor());
  EXPECT_EQ(values(q.weight), (std::vector<double>{1, 3}));
  EXPECT_EQ(values(q.bias), (std::vector<double>{-4, -12}));
}

TEST(Fold, ZeroVariancePlusEpsGivesScaleZeroAsTheModule) {
  // var + eps == 0: BatchNorm1d's invstd is 0 (its output is β), so W' = 0 and b' = β.
  const BatchNorm1d bn = eval_bn({3}, {7}, {1}, {0}, 0.0, DType::Float64);
  const FoldedLinear f = fold_into_preceding(bn, make_tensor({5}, {1, 1}, DType::Float64),
                                             make_tensor({2}, {1}, DType::Float64));
  EXPECT_EQ(values(f.weight), (std::vector<double>{0}));
  EXPECT_EQ(values(f.bias), (std::vector<double>{7}));
}

TEST(Fold, StridedInputsGiveTheContiguousResult) {
  // The hand case's W {2, 3} stored column-major and b every other element.
  std::vector<float> w_mem = {1, 4, 2, 8, 3, -4};
  std::vector<float> b_mem = {5, -99, 6, -99};
  const Tensor w = Tensor::from_blob(w_mem.data(), {2, 3}, {1, 2}, DType::Float32);
  const Tensor b = Tensor::from_blob(b_mem.data(), {2}, {2}, DType::Float32);
  const FoldedLinear f = fold_into_preceding(hand_bn(), w, b);
  EXPECT_EQ(values(f.weight), (std::vector<double>{1, 2, 3, -1, -2, 1}));
  EXPECT_EQ(values(f.bias), (std::vector<double>{4.5, 0}));
  EXPECT_TRUE(f.weight.is_contiguous());
  // Following: W {2, 2} = [[1, 2], [4, −8]] read through negative row strides.
  std::vector<double> wf_mem = {4, -8, 1, 2};
  const Tensor wf = Tensor::from_blob(wf_mem.data() + 2, {2, 2}, {-2, 1}, DType::Float64);
  const FoldedLinear g = fold_into_following(hand_bn(), wf, Tensor());
  EXPECT_EQ(values(g.weight), (std::vector<double>{1, -0.5, 4, 2}));
  EXPECT_EQ(values(g.bias), (std::vector<double>{2.5, -14}));
}

// Random model: the folded values against a long-double loop, within one rounding to the
// weight's dtype (unit roundoff u = 2^−p, p its significant bits) plus the float64 error of the
// computation (a few 2^−53 of the terms; the bias of a following Linear sums C terms).
struct RandomCase {
  std::vector<double> gamma, beta, mean, var, w, b;
  int64_t C, other;
  double eps = 1e-3;
};

RandomCase random_case(int64_t C, int64_t other, int64_t w_size, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> positive(0.1, 4.0);
  RandomCase r{{}, {}, {}, {}, {}, {}, C, other};
  for (int64_t c = 0; c < C; ++c) {
    r.gamma.push_back(normal(gen));
    r.beta.push_back(normal(gen));
    r.mean.push_back(normal(gen));
    r.var.push_back(positive(gen));
  }
  for (int64_t i = 0; i < w_size; ++i) r.w.push_back(normal(gen));
  return r;
}

int significant_bits(DType dtype) {
  switch (dtype) {
    case DType::Float64:
      return 53;
    case DType::BFloat16:
      return 8;
    case DType::Float16:
      return 11;
    default:
      return 24;
  }
}

::testing::AssertionResult within_one_rounding(const std::vector<double>& got,
                                               const std::vector<long double>& exact,
                                               const std::vector<long double>& magnitude,
                                               DType dtype) {
  const double u = std::ldexp(1.0, -significant_bits(dtype));
  const long double floor = dtype == DType::Float16 ? 0x1.0p-25L : 0;  // half fp16's subnormal
  for (std::size_t i = 0; i < got.size(); ++i) {
    const long double bound = u * std::fabs(exact[i]) + 0x1.0p-50L * magnitude[i] + floor;
    if (!(std::fabs(got[i] - exact[i]) <= bound)) {
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << got[i] << ", want " << static_cast<double>(exact[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(Fold, RandomPrecedingConv1dWithinOneRounding) {
  const int64_t C = 7, in = 5, k = 3;
  for (DType dtype : {DType::Float64, DType::Float32, DType::BFloat16, DType::Float16}) {
    RandomCase r = random_case(C, in * k, C * in * k, 21);
    r.b = std::vector<double>(r.beta.rbegin(), r.beta.rend());
    // The layer's values in its dtype, the bn's in float64.
    r.w = round_to(r.w, dtype);
    r.b = round_to(r.b, dtype);
    const BatchNorm1d bn = eval_bn(r.gamma, r.beta, r.mean, r.var, r.eps, DType::Float64);
    const FoldedLinear f =
        fold_into_preceding(bn, make_tensor(r.w, {C, in, k}, dtype), make_tensor(r.b, {C}, dtype));
    std::vector<long double> w_exact, w_mag, b_exact, b_mag;
    for (int64_t c = 0; c < C; ++c) {
      const auto i = static_cast<std::size_t>(c);
      const long double s = r.gamma[i] / std::sqrt(static_cast<long double>(r.var[i]) + r.eps);
      for (int64_t j = 0; j < in * k; ++j) {
        w_exact.push_back(r.w[static_cast<std::size_t>(c * in * k + j)] * s);
        w_mag.push_back(std::fabs(w_exact.back()));
      }
      b_exact.push_back((r.b[i] - r.mean[i]) * s + r.beta[i]);
      b_mag.push_back(std::fabs((r.b[i] - r.mean[i]) * s) + std::fabs(r.beta[i]));
    }
    EXPECT_TRUE(within_one_rounding(values(f.weight), w_exact, w_mag, dtype)) << dtype_name(dtype);
    EXPECT_TRUE(within_one_rounding(values(f.bias), b_exact, b_mag, dtype)) << dtype_name(dtype);
  }
}

TEST(Fold, RandomFollowingLinearWithinOneRounding) {
  const int64_t C = 9, out = 4;
  for (DType dtype : {DType::Float64, DType::Float32, DType::BFloat16, DType::Float16}) {
    RandomCase r = random_case(C, out, out * C, 22);
    r.w = round_to(r.w, dtype);
    r.b = round_to({0.25, -1.5, 3.0, 0.125}, dtype);
    const BatchNorm1d bn = eval_bn(r.gamma, r.beta, r.mean, r.var, r.eps, DType::Float32);
    const std::vector<double> gamma = round_to(r.gamma, DType::Float32),
                              beta = round_to(r.beta, DType::Float32),
                              mean = round_to(r.mean, DType::Float32),
                              var = round_to(r.var, DType::Float32);
    const FoldedLinear f =
        fold_into_following(bn, make_tensor(r.w, {out, C}, dtype), make_tensor(r.b, {out}, dtype));
    std::vector<long double> w_exact, w_mag, b_exact, b_mag;
    for (int64_t o = 0; o < out; ++o) {
      long double dot = 0, mag = 0;
      for (int64_t c = 0; c < C; ++c) {
        const auto i = static_cast<std::size_t>(c);
        const long double w = r.w[static_cast<std::size_t>(o * C + c)];
        const long double s = gamma[i] / std::sqrt(static_cast<long double>(var[i]) + r.eps);
        w_exact.push_back(w * s);
        w_mag.push_back(std::fabs(w * s));
        dot += w * (beta[i] - mean[i] * s);
        mag += std::fabs(w) * (std::fabs(beta[i]) + std::fabs(mean[i] * s));
      }
      b_exact.push_back(r.b[static_cast<std::size_t>(o)] + dot);
      b_mag.push_back(std::fabs(r.b[static_cast<std::size_t>(o)]) + mag * C);
    }
    EXPECT_TRUE(within_one_rounding(values(f.weight), w_exact, w_mag, dtype)) << dtype_name(dtype);
    EXPECT_TRUE(within_one_rounding(values(f.bias), b_exact, b_mag, dtype)) << dtype_name(dtype);
  }
}

TEST(Fold, BnStateErrors) {
  const Tensor w = make_tensor({1, 2}, {2, 1}, DType::Float32);
  BatchNorm1d training(2);
  EXPECT_TRUE(throws_error([&] { fold_into_preceding(training, w, Tensor()); }, "eval-mode"));
  EXPECT_TRUE(throws_error([&] { fold_into_following(training, w, Tensor()); }, "training mode"));
  BatchNorm1d no_stats(BatchNorm1dOptions(2).track_running_stats(false));
  no_stats.eval();
  EXPECT_TRUE(
      throws_error([&] { fold_into_preceding(no_stats, w, Tensor()); }, "track_running_stats"));
  EXPECT_TRUE(
      throws_error([&] { fold_into_following(no_stats, w, Tensor()); }, "cannot be folded"));
  BatchNorm1d moved = hand_bn();
  const BatchNorm1d taken = std::move(moved);
  EXPECT_TRUE(throws_error([&] { fold_into_preceding(moved, w, Tensor()); }, "moved-from"));
  const BatchNorm1d negative = eval_bn({1, 1}, {0, 0}, {0, 0}, {1, -2}, 1.0);
  EXPECT_TRUE(throws_error([&] { fold_into_preceding(negative, w, Tensor()); },
                           "running_var[1] = -2.0 with eps 1.0"));
  const BatchNorm1d nan = eval_bn({1, 1}, {0, 0}, {0, 0}, {std::nan(""), 1}, 1.0);
  const Tensor w12 = make_tensor({1, 2}, {1, 2}, DType::Float32);
  EXPECT_TRUE(
      throws_error([&] { fold_into_following(nan, w12, Tensor()); }, "running_var[0] = nan"));
}

TEST(Fold, ShapeAndDtypeErrors) {
  const BatchNorm1d bn = hand_bn();  // C = 2
  const Tensor w23 = make_tensor({1, 2, 3, 4, 5, 6}, {2, 3}, DType::Float32);
  const Tensor w32 = make_tensor({1, 2, 3, 4, 5, 6}, {3, 2}, DType::Float32);
  // Preceding: out features must be C; Linear or Conv1d only.
  EXPECT_TRUE(throws_error([&] { fold_into_preceding(bn, w32, Tensor()); },
                           "weight: expected a Linear weight [2, in] or a Conv1d weight [2, in, "
                           "k] (out features = bn's num_features 2), got shape [3, 2]"));
  EXPECT_TRUE(throws_error(
      [&] {
        fold_into_preceding(bn, make_tensor({1, 2}, {2}, DType::Float32), Tensor());
      },
      "got shape [2]"));
  EXPECT_TRUE(throws_error(
      [&] {
        fold_into_preceding(bn, Tensor::zeros({2, 1, 1, 1}, DType::Float32), Tensor());
      },
      "got shape [2, 1, 1, 1]"));
  EXPECT_TRUE(throws_error(
      [&] {
        fold_into_preceding(bn, w23, make_tensor({1, 2, 3}, {3}, DType::Float32));
      },
      "bias: expected shape [2]"));
  // Following: in features must be C; a Conv1d is refused.
  EXPECT_TRUE(throws_error([&] { fold_into_following(bn, w23, Tensor()); },
                           "weight: expected a Linear weight [out, 2] (in features = bn's "
                           "num_features 2), got shape [2, 3]"));
  EXPECT_TRUE(throws_error(
      [&] {
        fold_into_following(bn, make_tensor({1, 2, 3, 4}, {2, 2, 1}, DType::Float32), {});
      },
      "Conv1d after a BatchNorm1d cannot be folded"));
  EXPECT_TRUE(throws_error(
      [&] {
        fold_into_following(bn, w32, make_tensor({1, 2}, {2}, DType::Float32));
      },
      "bias: expected shape [3] (the Linear's out features), got shape [2]"));
  // Dtypes: one floating dtype for weight and bias.
  EXPECT_TRUE(throws_error(
      [&] {
        fold_into_preceding(bn, w23, make_tensor({1, 2}, {2}, DType::Float64));
      },
      "bias: expected the weight's dtype float32, got float64"));
  EXPECT_TRUE(throws_error(
      [&] {
        fold_into_following(bn, Tensor::zeros({3, 2}, DType::Int64), Tensor());
      },
      "weight: expected dtype float32, float64, bfloat16 or float16, got int64"));
  EXPECT_TRUE(throws_error([&] { fold_into_preceding(bn, Tensor(), Tensor()); },
                           "weight: expected a defined tensor"));
}

TEST(Fold, EmptyInFeaturesAndOutFeatures) {
  // A Linear with no inputs folds to its bias; a following Linear with no outputs to nothing.
  const FoldedLinear p =
      fold_into_preceding(hand_bn(), Tensor::empty({2, 0}, DType::Float64), Tensor());
  EXPECT_EQ(p.weight.sizes(), (Shape{2, 0}));
  EXPECT_EQ(values(p.bias), (std::vector<double>{-0.5, 1.5}));
  const FoldedLinear q =
      fold_into_following(hand_bn(), Tensor::empty({0, 2}, DType::Float64), Tensor());
  EXPECT_EQ(q.weight.sizes(), (Shape{0, 2}));
  EXPECT_EQ(q.bias.sizes(), (Shape{0}));
}

}  // namespace
}  // namespace bn1d::test
