// Property tests: many random shapes, options, modes and memory layouts, each a sequence of
// batches, compared against the independent float64 model in reference_model.hpp.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <random>

#include "format.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

namespace bn1d::test {
namespace {

struct Case {
  int64_t N, C, L;  // L == 0: 2-D input
  DType dtype;
  double eps;
  std::optional<double> momentum;
  bool affine, track;
  Layout layout;
};

std::string describe(const Case& k, uint64_t seed) {
  return "seed " + std::to_string(seed) + ": (N, C, L) = (" + std::to_string(k.N) + ", " +
         std::to_string(k.C) + ", " + std::to_string(k.L) + ") " + dtype_name(k.dtype) + " eps " +
         python_float_repr(k.eps) + " momentum " +
         (k.momentum ? python_float_repr(*k.momentum) : "None") + " affine " +
         std::to_string(k.affine) + " track " + std::to_string(k.track) + " " +
         layout_name(k.layout);
}

Case random_case(std::mt19937_64& gen) {
  auto pick = [&gen](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(gen);
  };
  Case k;
  k.N = pick(0, 5) == 0 ? 2 : pick(2, 40);
  k.C = pick(0, 5) == 0 ? 1 : pick(1, 24);
  k.L = pick(0, 2) == 0 ? 0 : (pick(0, 4) == 0 ? 1 : pick(1, 30));
  k.dtype = pick(0, 1) ? DType::Float64 : DType::Float32;
  const double eps_choices[] = {1e-5, 0.0, 1e-3, 0.1};
  k.eps = eps_choices[pick(0, 3)];
  const std::optional<double> momenta[] = {0.1, std::nullopt, 0.0, 1.0, 0.5};
  k.momentum = momenta[pick(0, 4)];
  k.affine = pick(0, 3) != 0;
  k.track = pick(0, 3) != 0;
  k.layout = static_cast<Layout>(pick(0, 3));
  return k;
}

void run_case(const Case& k, uint64_t seed) {
  SCOPED_TRACE(describe(k, seed));
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  const int64_t L = k.L == 0 ? 1 : k.L;
  const Shape shape = k.L == 0 ? Shape{k.N, k.C} : Shape{k.N, k.C, k.L};

  BatchNorm1d m(BatchNorm1dOptions(k.C)
                    .eps(k.eps)
                    .momentum(k.momentum)
                    .affine(k.affine)
                    .track_running_stats(k.track)
                    .dtype(k.dtype));
  ReferenceBatchNorm ref(k.C, k.eps, k.momentum, k.affine, k.track);
  ref.float32_buffers = k.dtype == DType::Float32;
  if (k.affine) {  // non-trivial parameters, representable in the module's dtype
    for (int64_t c = 0; c < k.C; ++c) {
      ref.weight[c] = round_to({1.0 + 0.5 * normal(gen)}, k.dtype)[0];
      ref.bias[c] = round_to({normal(gen)}, k.dtype)[0];
    }
    m.weight().copy_from(make_tensor(ref.weight, {k.C}, k.dtype));
    m.bias().copy_from(make_tensor(ref.bias, {k.C}, k.dtype));
  }

  const bool modes[] = {true, true, false, true, false};
  for (int step = 0; step < 5; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    m.train(modes[step]);
    ref.training = modes[step];
    // Per-channel offsets and scales, so that statistics differ between channels.
    std::vector<double> x(static_cast<std::size_t>(k.N * k.C * L)), dy(x.size());
    for (int64_t i = 0; i < k.N; ++i)
      for (int64_t c = 0; c < k.C; ++c)
        for (int64_t l = 0; l < L; ++l) {
          x[(i * k.C + c) * L + l] =
              3.0 * std::sin(static_cast<double>(c)) + (1.0 + c % 4) * normal(gen);
          dy[(i * k.C + c) * L + l] = normal(gen);
        }
    x = round_to(x, k.dtype);
    dy = round_to(dy, k.dtype);
    std::shared_ptr<std::vector<char>> keep_x, keep_dy;
    const Tensor input = make_strided(x, shape, k.dtype, k.layout, keep_x);
    const Tensor grad = make_strided(dy, shape, k.dtype, k.layout, keep_dy);

    const Tensor y = m.forward(input);
    const std::vector<double> y_ref = ref.forward(x, k.N, L);
    ASSERT_EQ(y.sizes(), shape);
    ASSERT_TRUE(y.is_contiguous());
    EXPECT_TRUE(all_close(y, y_ref));
    if (k.track) {
      EXPECT_TRUE(all_close(m.running_mean(), ref.running_mean));
      EXPECT_TRUE(all_close(m.running_var(), ref.running_var));
      EXPECT_EQ(m.num_batches_tracked(), ref.num_batches_tracked);
    } else {
      EXPECT_FALSE(m.running_mean().defined());
      EXPECT_FALSE(m.running_var().defined());
    }

    const BatchNorm1d::Gradients g = m.backward(grad);
    const ReferenceBatchNorm::Grads g_ref = ref.backward(dy);
    // dx = w·invstd·(dy − Σdy/n − x̂·Σ(dy·x̂)/n) may cancel to ~0 (e.g. n = 2, where it is 0):
    // scale the bound by its terms, max|w·invstd| · max|dy|.
    double term_scale = 0;
    for (int64_t c = 0; c < k.C; ++c)
      term_scale = std::max(term_scale, std::fabs(ref.weight[c] * ref.invstd[c]));
    EXPECT_TRUE(all_close(g.input, g_ref.input, term_scale * max_abs(dy)));
    if (k.affine) {
      EXPECT_TRUE(all_close(g.weight, g_ref.weight));
      EXPECT_TRUE(all_close(g.bias, g_ref.bias));
    } else {
      EXPECT_FALSE(g.weight.defined());
      EXPECT_FALSE(g.bias.defined());
    }
  }
}

TEST(Property, RandomCasesMatchFloat64Reference) {
  std::mt19937_64 gen(20261124);
  for (int i = 0; i < 400; ++i) {
    const uint64_t seed = gen();
    std::mt19937_64 case_gen(seed);
    run_case(random_case(case_gen), seed);
    if (HasFailure()) break;  // the first failing seed is enough to debug
  }
}

TEST(Property, EveryLayoutGivesTheSameResult) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const Shape shape{7, 5, 9};
    const std::vector<double> x = round_to(values(randn(shape, DType::Float64, 7)), dtype);
    ReferenceBatchNorm ref(5, 1e-5, 0.1, true, true);
    const std::vector<double> want = ref.forward(x, 7, 9);
    // Each layout takes another kernel (rows, cols, reference): same values within tolerance.
    for (Layout layout :
         {Layout::Contiguous, Layout::ChannelsLast, Layout::Sliced, Layout::ColumnMajor}) {
      BatchNorm1d m(BatchNorm1dOptions(5).dtype(dtype));
      std::shared_ptr<std::vector<char>> keep;
      EXPECT_TRUE(all_close(m(make_strided(x, shape, dtype, layout, keep)), want))
          << layout_name(layout);
    }
  }
}

// Central finite differences of L = Σ y·r (r fixed and random) check the analytic gradients of
// the library without any formula in common: |analytic − numeric| ≤ 1e-6 · max(1, |numeric|).
TEST(Property, GradientsMatchFiniteDifferences) {
  for (bool training : {true, false}) {
    const int64_t N = 5, C = 3, L = 4;
    const Shape shape{N, C, L};
    const Tensor x = randn(shape, DType::Float64, 11);
    const Tensor r = randn(shape, DType::Float64, 12);
    auto make = [&] {
      BatchNorm1d m(BatchNorm1dOptions(C).dtype(DType::Float64).momentum(0.0));
      m.weight().copy_from(make_tensor({0.5, 1.5, -2.0}, {C}, DType::Float64));
      m.bias().copy_from(make_tensor({0.1, -0.2, 0.3}, {C}, DType::Float64));
      m.running_mean().copy_from(make_tensor({0.2, -0.1, 0.4}, {C}, DType::Float64));
      m.running_var().copy_from(make_tensor({1.5, 0.7, 2.0}, {C}, DType::Float64));
      m.train(training);
      return m;
    };
    auto loss = [&](const Tensor& input) {
      BatchNorm1d m = make();
      const std::vector<double> y = values(m(input)), rv = values(r);
      double s = 0;
      for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * rv[i];
      return s;
    };
    BatchNorm1d m = make();
    m(x);
    const std::vector<double> dx = values(m.backward(r).input);
    const double h = 1e-6;
    for (int64_t i = 0; i < x.numel(); ++i) {
      Tensor xp = x.clone(), xm = x.clone();
      xp.data<double>()[i] += h;
      xm.data<double>()[i] -= h;
      const double numeric = (loss(xp) - loss(xm)) / (2 * h);
      EXPECT_NEAR(dx[i], numeric, 1e-6 * std::max(1.0, std::fabs(numeric)))
          << "element " << i << " training " << training;
    }
  }
}

}  // namespace
}  // namespace bn1d::test
