// The fused activation (bn1d/activation.hpp) against a float64 oracle written here: batch norm
// in float64, then torch's relu / leaky_relu and their gradients (ReLU: dy where the output > 0,
// else 0; LeakyReLU: dy where z > 0, else slope · dy), then the textbook batch-norm backward.
// Nothing here is computed by bn1d.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cctype>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- The oracle ------------------------------------------------------------------------------

// Which statistics the oracle normalizes with, and over which positions.
struct OracleSetup {
  int64_t N = 0, C = 0, L = 1;
  std::vector<double> weight, bias;  // empty: 1 and 0
  FusedActivation act;
  DType dtype = DType::Float32;  // the input's: outputs are compared after rounding to it
  bool batch_statistics = true;  // else running_mean / running_var
  std::vector<double> running_mean, running_var;
  double eps = 1e-5;
  std::vector<int64_t> lengths;  // masked: sample n's valid positions are [0, lengths[n])
  std::vector<int64_t> bounds;   // ghost: groups of samples [b[g], b[g + 1])
};

OracleSetup setup(int64_t N, int64_t C, int64_t L, std::vector<double> weight,
                  std::vector<double> bias, const FusedActivation& act, DType dtype) {
  OracleSetup s;
  s.N = N;
  s.C = C;
  s.L = L;
  s.weight = std::move(weight);
  s.bias = std::move(bias);
  s.act = act;
  s.dtype = dtype;
  return s;
}

// @p s with running statistics.
OracleSetup with_running(OracleSetup s, std::vector<double> mean, std::vector<double> var) {
  s.batch_statistics = false;
  s.running_mean = std::move(mean);
  s.running_var = std::move(var);
  return s;
}

struct OracleResult {
  std::vector<double> y, dx, dw, db;
};

double round_one(double v, DType dtype) { return round_to({v}, dtype)[0]; }

// torch's relu / leaky_relu of z (NaN stays NaN).
double activate(double z, const FusedActivation& act) {
  if (act.kind == Activation::None || z > 0 || std::isnan(z)) return z;
  return act.kind == Activation::ReLU ? 0.0 : z * act.negative_slope;
}

// dy times the activation's derivative: ReLU's threshold_backward looks at the stored output
// (output <= 0 gives 0, so NaN passes); leaky_relu_backward at its input (z > 0 passes).
double gate(double z, double dy, const FusedActivation& act, DType dtype) {
  switch (act.kind) {
    case Activation::ReLU:
      return round_one(activate(z, act), dtype) <= 0 ? 0.0 : dy;
    case Activation::LeakyReLU:
      return round_one(z, dtype) > 0 ? dy : dy * act.negative_slope;
    default:
      return dy;
  }
}

OracleResult oracle(const OracleSetup& s, const std::vector<double>& x,
                    const std::vector<double>& dy) {
  const int64_t N = s.N, C = s.C, L = s.L;
  OracleResult r{std::vector<double>(x.size(), 0.0), std::vector<double>(x.size(), 0.0),
                 std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
  const std::vector<int64_t> bounds = s.bounds.empty() ? std::vector<int64_t>{0, N} : s.bounds;
  for (std::size_t g = 0; g + 1 < bounds.size(); ++g) {
    for (int64_t c = 0; c < C; ++c) {
      std::vector<int64_t> ks;  // the group's valid positions of channel c
      for (int64_t n = bounds[g]; n < bounds[g + 1]; ++n)
        for (int64_t l = 0; l < L; ++l)
          if (s.lengths.empty() || l < s.lengths[n]) ks.push_back((n * C + c) * L + l);
      const double count = static_cast<double>(ks.size());
      double mean = 0, var = 0;
      if (s.batch_statistics) {
        for (int64_t k : ks) mean += x[k];
        mean /= count;
        for (int64_t k : ks) var += (x[k] - mean) * (x[k] - mean);
        var /= count;
      } else {
        mean = s.running_mean[c];
        var = s.running_var[c];
      }
      const double invstd = 1.0 / std::sqrt(var + s.eps);
      const double w = s.weight.empty() ? 1.0 : s.weight[c];
      const double b = s.bias.empty() ? 0.0 : s.bias[c];
      double sum_dz = 0, sum_dz_xhat = 0;
      std::vector<double> dz(ks.size());
      for (std::size_t i = 0; i < ks.size(); ++i) {
        const double xhat = (x[ks[i]] - mean) * invstd;
        const double z = xhat * w + b;
        r.y[ks[i]] = activate(z, s.act);
        dz[i] = gate(z, dy[ks[i]], s.act, s.dtype);
        sum_dz += dz[i];
        sum_dz_xhat += dz[i] * xhat;
      }
      r.dw[c] += sum_dz_xhat;
      r.db[c] += sum_dz;
      for (std::size_t i = 0; i < ks.size(); ++i) {
        const double xhat = (x[ks[i]] - mean) * invstd;
        r.dx[ks[i]] = s.batch_statistics
                          ? w * invstd / count * (count * dz[i] - sum_dz - xhat * sum_dz_xhat)
                          : w * invstd * dz[i];
      }
    }
  }
  return r;
}

// ---- Comparisons -----------------------------------------------------------------------------

// float64: 1e-12 and float32: 1e-5 of the largest expected magnitude; bfloat16 / float16: 2 units
// in the last place of each expected value. NaN must meet NaN.
::testing::AssertionResult matches(const std::vector<double>& got, const std::vector<double>& want,
                                   DType dtype) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  double largest = 0;
  for (double w : want)
    if (std::isfinite(w)) largest = std::max(largest, std::fabs(w));
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i]) != std::isnan(got[i]))
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << got[i] << ", want " << want[i];
    if (std::isnan(want[i])) continue;
    double bound = 0;
    if (dtype == DType::Float64) bound = 1e-12 * largest;
    if (dtype == DType::Float32) bound = 1e-5 * largest;
    if (dtype == DType::BFloat16 || dtype == DType::Float16)
      bound = 2 * ulp16(std::fabs(want[i]), dtype);
    if (!(std::fabs(got[i] - want[i]) <= bound)) {
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << got[i] << ", want " << want[i] << " (|diff| "
             << std::fabs(got[i] - want[i]) << " > bound " << bound << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult matches(const Tensor& got, const std::vector<double>& want) {
  if (!got.defined()) return ::testing::AssertionFailure() << "undefined tensor";
  return matches(values(got), want, got.dtype());
}

// ---- Inputs ----------------------------------------------------------------------------------

std::vector<double> random_values(int64_t count, uint32_t seed, double offset = 0.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(offset, 1.0);
  std::vector<double> v(static_cast<std::size_t>(count));
  for (double& x : v) x = dist(gen);
  return v;
}

Shape shape_of(int64_t N, int64_t C, int64_t L, bool is3d) {
  return is3d ? Shape{N, C, L} : Shape{N, C};
}

// Random weight and bias (bias around 0.3 so that both signs of z are common), set on @p m.
template <class Module>
void set_params(Module& m, int64_t C, uint32_t seed) {
  const DType dtype = m.options().dtype();
  m.weight() = make_tensor(random_values(C, seed, 0.5), {C}, dtype);
  m.bias() = make_tensor(random_values(C, seed + 1, 0.3), {C}, dtype);
}

FusedActivation relu() { return {Activation::ReLU, 0.01}; }
FusedActivation leaky(double slope) { return {Activation::LeakyReLU, slope}; }

BatchNorm1dOptions options_with(int64_t C, const FusedActivation& act, DType dtype) {
  return BatchNorm1dOptions(C).activation(act.kind).negative_slope(act.negative_slope).dtype(dtype);
}

// ---- Module over dtypes, layouts and activations ---------------------------------------------

struct ModuleCase {
  DType dtype;
  Layout layout;
  bool is3d;
  int64_t N, C, L;
  FusedActivation act;
};

std::string case_name(const ModuleCase& c) {
  std::string s = std::string(dtype_name(c.dtype)) + "_" + layout_name(c.layout) + "_" +
                  (c.is3d ? "3d_L" + std::to_string(c.L) : std::string("2d")) + "_" +
                  activation_name(c.act.kind);
  if (c.act.kind == Activation::LeakyReLU)
    s += c.act.negative_slope < 0 ? "_negative" : c.act.negative_slope > 1 ? "_steep" : "";
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

class ActivationModule : public ::testing::TestWithParam<ModuleCase> {};

// Training forward and backward, then an eval forward, backward and infer with the running
// statistics the training step left.
TEST_P(ActivationModule, TrainAndEvalMatchTheOracle) {
  const ModuleCase& p = GetParam();
  const DType param_dtype = p.dtype == DType::Float64 ? DType::Float64 : DType::Float32;
  BatchNorm1d m(options_with(p.C, p.act, param_dtype));
  set_params(m, p.C, 7);
  const Shape sizes = shape_of(p.N, p.C, p.L, p.is3d);
  const int64_t count = p.N * p.C * p.L;
  const std::vector<double> x = round_to(random_values(count, 1), p.dtype);
  const std::vector<double> dy = round_to(random_values(count, 2), p.dtype);
  std::shared_ptr<std::vector<char>> keep_x, keep_dy;
  const Tensor input = make_strided(x, sizes, p.dtype, p.layout, keep_x);
  const Tensor grad_output = make_strided(dy, sizes, p.dtype, p.layout, keep_dy);

  OracleSetup s = setup(p.N, p.C, p.L, values(m.weight()), values(m.bias()), p.act, p.dtype);
  const OracleResult train = oracle(s, x, dy);
  EXPECT_TRUE(matches(m.forward(input), train.y));
  const auto grads = m.backward(grad_output);
  EXPECT_TRUE(matches(grads.input, train.dx));
  EXPECT_TRUE(matches(grads.weight, train.dw));
  EXPECT_TRUE(matches(grads.bias, train.db));

  m.eval();
  s.batch_statistics = false;
  s.running_mean = values(m.running_mean());
  s.running_var = values(m.running_var());
  const OracleResult eval = oracle(s, x, dy);
  EXPECT_TRUE(matches(m.forward(input), eval.y));
  EXPECT_TRUE(matches(m.forward(input), eval.y));  // the cached eval normalization
  const auto eval_grads = m.backward(grad_output);
  EXPECT_TRUE(matches(eval_grads.input, eval.dx));
  EXPECT_TRUE(matches(eval_grads.weight, eval.dw));
  EXPECT_TRUE(matches(eval_grads.bias, eval.db));
  EXPECT_TRUE(matches(m.infer(input), eval.y));
}

std::vector<ModuleCase> module_cases() {
  std::vector<ModuleCase> cases;
  const FusedActivation acts[] = {relu(), leaky(0.01), leaky(-0.5), leaky(2.5)};
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    for (const FusedActivation& act : acts) {
      cases.push_back({dtype, Layout::Contiguous, false, 64, 5, 1, act});
      cases.push_back({dtype, Layout::Contiguous, true, 6, 4, 37, act});
      cases.push_back({dtype, Layout::ChannelsLast, true, 5, 9, 16, act});
      cases.push_back({dtype, Layout::Sliced, true, 4, 3, 11, act});
      cases.push_back({dtype, Layout::Contiguous, true, 9, 6, 3, act});  // short L
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, ActivationModule, ::testing::ValuesIn(module_cases()),
                         [](const auto& info) { return case_name(info.param); });

// A bfloat16 or float16 module (parameters and running statistics of the input's dtype).
TEST(ActivationModule16, PureSixteenBitModuleMatchesTheOracle) {
  for (DType dtype : {DType::BFloat16, DType::Float16}) {
    for (const FusedActivation& act : {relu(), leaky(0.2)}) {
      const int64_t N = 6, C = 3, L = 10;
      BatchNorm1d m(options_with(C, act, dtype));
      set_params(m, C, 101);
      const std::vector<double> x = round_to(random_values(N * C * L, 102), dtype);
      const std::vector<double> dy = round_to(random_values(N * C * L, 103), dtype);
      const OracleSetup s = setup(N, C, L, values(m.weight()), values(m.bias()), act, dtype);
      const OracleResult want = oracle(s, x, dy);
      EXPECT_TRUE(matches(m.forward(make_tensor(x, {N, C, L}, dtype)), want.y));
      const auto grads = m.backward(make_tensor(dy, {N, C, L}, dtype));
      EXPECT_TRUE(matches(grads.input, want.dx));
      EXPECT_TRUE(matches(grads.weight, want.dw));
      EXPECT_TRUE(matches(grads.bias, want.db));
    }
  }
}

// ---- Module options: no affine, no running statistics, masked, ghost -------------------------

TEST(ActivationModuleOptions, NoAffineMatchesTheOracle) {
  for (const FusedActivation& act : {relu(), leaky(0.2)}) {
    BatchNorm1d m(options_with(4, act, DType::Float64).affine(false));
    const std::vector<double> x = random_values(4 * 4 * 5, 11, 0.2);
    const std::vector<double> dy = random_values(4 * 4 * 5, 12);
    const OracleSetup s = setup(4, 4, 5, {}, {}, act, DType::Float64);
    const OracleResult want = oracle(s, x, dy);
    EXPECT_TRUE(matches(m.forward(make_tensor(x, {4, 4, 5}, DType::Float64)), want.y));
    const auto grads = m.backward(make_tensor(dy, {4, 4, 5}, DType::Float64));
    EXPECT_TRUE(matches(grads.input, want.dx));
    EXPECT_FALSE(grads.weight.defined());
  }
}

TEST(ActivationModuleOptions, NoRunningStatisticsUsesBatchStatisticsInEval) {
  BatchNorm1d m(options_with(3, leaky(0.1), DType::Float64).track_running_stats(false));
  set_params(m, 3, 21);
  m.eval();
  const std::vector<double> x = random_values(8 * 3, 13);
  const std::vector<double> dy = random_values(8 * 3, 14);
  const OracleSetup s =
      setup(8, 3, 1, values(m.weight()), values(m.bias()), leaky(0.1), DType::Float64);
  const OracleResult want = oracle(s, x, dy);
  const Tensor input = make_tensor(x, {8, 3}, DType::Float64);
  EXPECT_TRUE(matches(m.forward(input), want.y));
  const auto grads = m.backward(make_tensor(dy, {8, 3}, DType::Float64));
  EXPECT_TRUE(matches(grads.input, want.dx));
  EXPECT_TRUE(matches(grads.weight, want.dw));
  EXPECT_TRUE(matches(grads.bias, want.db));
  EXPECT_TRUE(matches(m.infer(input), want.y));
}

TEST(ActivationModuleOptions, MaskedMatchesTheOracleOnTheValidPositions) {
  for (DType dtype : {DType::Float64, DType::Float32}) {
    for (const FusedActivation& act : {relu(), leaky(0.3)}) {
      const int64_t N = 4, C = 3, L = 9;
      BatchNorm1d m(options_with(C, act, dtype));
      set_params(m, C, 31);
      const std::vector<int64_t> lengths{9, 4, 1, 6};
      const ValidPositions valid = ValidPositions::from_lengths(lengths);
      const std::vector<double> x = round_to(random_values(N * C * L, 15), dtype);
      const std::vector<double> dy = round_to(random_values(N * C * L, 16), dtype);
      OracleSetup s = setup(N, C, L, values(m.weight()), values(m.bias()), act, dtype);
      s.lengths = lengths;
      const OracleResult want = oracle(s, x, dy);
      EXPECT_TRUE(matches(m.forward(make_tensor(x, {N, C, L}, dtype), valid), want.y));
      const auto grads = m.backward(make_tensor(dy, {N, C, L}, dtype));
      EXPECT_TRUE(matches(grads.input, want.dx));
      EXPECT_TRUE(matches(grads.weight, want.dw));
      EXPECT_TRUE(matches(grads.bias, want.db));
      m.eval();
      const OracleResult eval =
          oracle(with_running(s, values(m.running_mean()), values(m.running_var())), x, dy);
      EXPECT_TRUE(matches(m.forward(make_tensor(x, {N, C, L}, dtype), valid), eval.y));
      EXPECT_TRUE(matches(m.backward(make_tensor(dy, {N, C, L}, dtype)).input, eval.dx));
      EXPECT_TRUE(matches(m.infer(make_tensor(x, {N, C, L}, dtype), valid), eval.y));
    }
  }
}

// Channels-last output and grad_input buffers (the input's strides) are written in place.
TEST(ActivationModuleOptions, ChannelsLastBuffersMatchTheOracle) {
  for (const FusedActivation& act : {relu(), leaky(0.1)}) {
    const int64_t N = 4, C = 8, L = 12;
    BatchNorm1d m(options_with(C, act, DType::Float32));
    set_params(m, C, 111);
    const std::vector<double> x = round_to(random_values(N * C * L, 112), DType::Float32);
    const std::vector<double> dy = round_to(random_values(N * C * L, 113), DType::Float32);
    std::shared_ptr<std::vector<char>> keep_x, keep_dy, keep_y, keep_dx;
    const Shape sizes{N, C, L};
    const Tensor input = make_strided(x, sizes, DType::Float32, Layout::ChannelsLast, keep_x);
    const Tensor grad_output =
        make_strided(dy, sizes, DType::Float32, Layout::ChannelsLast, keep_dy);
    Tensor output = make_strided(x, sizes, DType::Float32, Layout::ChannelsLast, keep_y);
    BatchNorm1d::Gradients grads;
    grads.input = make_strided(dy, sizes, DType::Float32, Layout::ChannelsLast, keep_dx);
    const void* y_storage = output.raw_data();
    const void* dx_storage = grads.input.raw_data();
    const OracleResult want =
        oracle(setup(N, C, L, values(m.weight()), values(m.bias()), act, DType::Float32), x, dy);
    m.forward(input, output);
    m.backward(grad_output, grads);
    EXPECT_EQ(output.raw_data(), y_storage);
    EXPECT_EQ(grads.input.raw_data(), dx_storage);
    EXPECT_TRUE(matches(output, want.y));
    EXPECT_TRUE(matches(grads.input, want.dx));
    EXPECT_TRUE(matches(grads.weight, want.dw));
  }
}

TEST(ActivationModuleOptions, GhostChunksMatchTheOracle) {
  for (const FusedActivation& act : {relu(), leaky(-0.5)}) {
    const int64_t N = 9, C = 4, L = 5;
    GhostBatchNorm1d m(options_with(C, act, DType::Float64), 3);
    set_params(m, C, 41);
    const std::vector<double> x = random_values(N * C * L, 17);
    const std::vector<double> dy = random_values(N * C * L, 18);
    OracleSetup s = setup(N, C, L, values(m.weight()), values(m.bias()), act, DType::Float64);
    s.bounds = {0, 3, 6, 9};
    const OracleResult want = oracle(s, x, dy);
    EXPECT_TRUE(matches(m.forward(make_tensor(x, {N, C, L}, DType::Float64)), want.y));
    const auto grads = m.backward(make_tensor(dy, {N, C, L}, DType::Float64));
    EXPECT_TRUE(matches(grads.input, want.dx));
    EXPECT_TRUE(matches(grads.weight, want.dw));
    EXPECT_TRUE(matches(grads.bias, want.db));
  }
}

// ---- Exact zeros and NaN ---------------------------------------------------------------------

// Each channel holds {-1, 0, 1} (mean 0), weight 1 and bias 0: z is exactly 0 at x == 0. With
// dy = 1 there only, ReLU's gradient is 0 everywhere and LeakyReLU's Σdy' is the slope.
TEST(ActivationZeros, GradientAtExactlyZeroFollowsTorch) {
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    const DType param_dtype = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
    const Tensor input = make_tensor({-1, 1, 0, 0, 1, -1}, {3, 2}, dtype);
    const Tensor grad_output = make_tensor({0, 0, 1, 1, 0, 0}, {3, 2}, dtype);
    BatchNorm1d relu_bn(options_with(2, relu(), param_dtype));
    const std::vector<double> y = values(relu_bn.forward(input));
    EXPECT_EQ(y[2], 0.0);
    EXPECT_EQ(y[3], 0.0);
    EXPECT_EQ(y[0], 0.0);
    EXPECT_GT(y[1], 0.0);
    const auto relu_grads = relu_bn.backward(grad_output);
    for (double v : values(relu_grads.input)) EXPECT_EQ(v, 0.0) << dtype_name(dtype);
    for (double v : values(relu_grads.bias)) EXPECT_EQ(v, 0.0);
    for (double v : values(relu_grads.weight)) EXPECT_EQ(v, 0.0);

    BatchNorm1d leaky_bn(options_with(2, leaky(0.25), param_dtype));
    const std::vector<double> ly = values(leaky_bn.forward(input));
    EXPECT_EQ(ly[2], 0.0);
    const auto leaky_grads = leaky_bn.backward(grad_output);
    for (double v : values(leaky_grads.bias)) EXPECT_EQ(v, 0.25) << dtype_name(dtype);
    for (double v : values(leaky_grads.weight)) EXPECT_EQ(v, 0.0);  // x̂ = 0 there
    OracleSetup s = setup(3, 2, 1, {1, 1}, {0, 0}, leaky(0.25), dtype);
    const OracleResult want = oracle(s, values(input), values(grad_output));
    EXPECT_TRUE(matches(leaky_grads.input, want.dx));
  }
}

// In eval mode a NaN input gives NaN at its position only: never 0. The gradients at the other
// positions are unaffected. (At the NaN itself torch's eval gradient is w · invstd · dy', but
// bn1d's eval backward forms b · (x − mean) with b = 0, which is NaN there with or without an
// activation: not asserted here.)
TEST(ActivationNaN, NaNInputGivesNaNOutput) {
  for (const FusedActivation& act : {relu(), leaky(0.5)}) {
    BatchNorm1d m(options_with(2, act, DType::Float64));
    m.eval();
    const Tensor input = make_tensor({kNaN, -2, 3, kNaN}, {2, 2}, DType::Float64);
    const std::vector<double> y = values(m.forward(input));
    EXPECT_TRUE(std::isnan(y[0]));
    EXPECT_TRUE(std::isnan(y[3]));
    const auto grads = m.backward(make_tensor({1, 1, 1, 1}, {2, 2}, DType::Float64));
    const OracleSetup s =
        with_running(setup(2, 2, 1, {1, 1}, {0, 0}, act, DType::Float64), {0, 0}, {1, 1});
    const OracleResult want = oracle(s, values(input), {1, 1, 1, 1});
    EXPECT_TRUE(matches(y, want.y, DType::Float64));
    const std::vector<double> dx = values(grads.input);
    EXPECT_TRUE(matches({dx[1], dx[2]}, {want.dx[1], want.dx[2]}, DType::Float64));
    EXPECT_TRUE(matches(m.infer(input), want.y));
  }
}

// ---- Functional API --------------------------------------------------------------------------

TEST(ActivationFunctional, ForwardAndBackwardMatchTheOracle) {
  for (const FusedActivation& act : {relu(), leaky(0.05), FusedActivation{}}) {
    const int64_t N = 7, C = 3, L = 4;
    const std::vector<double> x = random_values(N * C * L, 51);
    const std::vector<double> dy = random_values(N * C * L, 52);
    const std::vector<double> w = random_values(C, 53, 0.5), b = random_values(C, 54, 0.3);
    const Tensor input = make_tensor(x, {N, C, L}, DType::Float64);
    const Tensor grad_output = make_tensor(dy, {N, C, L}, DType::Float64);
    const Tensor weight = make_tensor(w, {C}, DType::Float64);
    const Tensor bias = make_tensor(b, {C}, DType::Float64);
    const OracleResult want = oracle(setup(N, C, L, w, b, act, DType::Float64), x, dy);

    EXPECT_TRUE(matches(batch_norm(input, {}, {}, weight, bias, true, 0.1, 1e-5, act), want.y));
    const Normalization norm = normalization_from_batch(batch_stats(input), 1e-5);
    EXPECT_TRUE(matches(batch_norm_apply(input, norm, weight, bias, act), want.y));
    const auto grads = batch_norm_backward(grad_output, input, norm, weight, bias, true, true, act);
    EXPECT_TRUE(matches(grads.input, want.dx));
    EXPECT_TRUE(matches(grads.weight, want.dw));
    EXPECT_TRUE(matches(grads.bias, want.db));
    // The separable steps: gated sums, then the input gradient from them.
    const GradStats sums = backward_stats(grad_output, input, norm, weight, bias, act);
    EXPECT_TRUE(matches(values(sums.sum_dy), want.db, DType::Float64));
    const Tensor dx =
        batch_norm_backward_input(grad_output, input, norm, weight, bias, sums, true, act);
    EXPECT_TRUE(matches(dx, want.dx));
    Tensor dx_into;
    batch_norm_backward_input(dx_into, grad_output, input, norm, weight, bias, sums, true, act);
    EXPECT_TRUE(matches(dx_into, want.dx));
  }
}

TEST(ActivationFunctional, MaskedStepsMatchTheOracle) {
  const int64_t N = 3, C = 2, L = 6;
  const std::vector<int64_t> lengths{6, 2, 4};
  const ValidPositions valid = ValidPositions::from_lengths(lengths);
  const std::vector<double> x = random_values(N * C * L, 61);
  const std::vector<double> dy = random_values(N * C * L, 62);
  const std::vector<double> w{0.8, -1.3}, b{0.2, 0.4};
  const Tensor input = make_tensor(x, {N, C, L}, DType::Float64);
  const Tensor grad_output = make_tensor(dy, {N, C, L}, DType::Float64);
  const Tensor weight = make_tensor(w, {C}, DType::Float64);
  const Tensor bias = make_tensor(b, {C}, DType::Float64);
  OracleSetup s = setup(N, C, L, w, b, leaky(0.1), DType::Float64);
  s.lengths = lengths;
  const OracleResult want = oracle(s, x, dy);
  EXPECT_TRUE(
      matches(batch_norm(input, {}, {}, weight, bias, true, 0.1, 1e-5, valid, leaky(0.1)), want.y));
  const Normalization norm = normalization_from_batch(batch_stats(input, valid), 1e-5);
  EXPECT_TRUE(matches(batch_norm_apply(input, norm, weight, bias, valid, leaky(0.1)), want.y));
  const auto grads =
      batch_norm_backward(grad_output, input, norm, weight, bias, true, true, leaky(0.1), valid);
  EXPECT_TRUE(matches(grads.input, want.dx));
  EXPECT_TRUE(matches(grads.weight, want.dw));
  EXPECT_TRUE(matches(grads.bias, want.db));
  const GradStats sums = backward_stats(grad_output, input, norm, weight, bias, leaky(0.1), valid);
  EXPECT_TRUE(matches(values(sums.sum_dy), want.db, DType::Float64));
  EXPECT_TRUE(matches(batch_norm_backward_input(grad_output, input, norm, weight, bias, sums, true,
                                                leaky(0.1), valid),
                      want.dx));
}

TEST(ActivationFunctional, EvalModeUsesRunningStatistics) {
  const std::vector<double> x = random_values(10 * 3, 71);
  const std::vector<double> dy = random_values(10 * 3, 72);
  const std::vector<double> rm{0.1, -0.2, 0.3}, rv{0.5, 2.0, 1.5};
  const OracleSetup s = with_running(setup(10, 3, 1, {}, {}, relu(), DType::Float64), rm, rv);
  const OracleResult want = oracle(s, x, dy);
  const Tensor input = make_tensor(x, {10, 3}, DType::Float64);
  const Tensor running_mean = make_tensor(rm, {3}, DType::Float64);
  const Tensor running_var = make_tensor(rv, {3}, DType::Float64);
  EXPECT_TRUE(matches(
      batch_norm(input, running_mean, running_var, {}, {}, false, 0.1, 1e-5, relu()), want.y));
  const Normalization norm = normalization_from_running(running_mean, running_var, 1e-5);
  const auto grads = batch_norm_backward(make_tensor(dy, {10, 3}, DType::Float64), input, norm, {},
                                         {}, false, false, relu());
  EXPECT_TRUE(matches(grads.input, want.dx));
}

// ---- Errors ----------------------------------------------------------------------------------

TEST(ActivationErrors, NonFiniteSlopeIsRefusedAndChangesNothing) {
  for (double slope : {kNaN, std::numeric_limits<double>::infinity()}) {
    EXPECT_TRUE(throws_error([&] { BatchNorm1d(options_with(3, leaky(slope), DType::Float32)); },
                             "negative_slope"));
    EXPECT_TRUE(
        throws_error([&] { GhostBatchNorm1d(options_with(3, leaky(slope), DType::Float32), 2); },
                     "negative_slope"));
    const Tensor input = make_tensor(random_values(12, 81), {4, 3}, DType::Float64);
    const Tensor running_mean = make_tensor({0.5, 0.5, 0.5}, {3}, DType::Float64);
    const Tensor running_var = make_tensor({2, 2, 2}, {3}, DType::Float64);
    EXPECT_TRUE(throws_error(
        [&] {
          batch_norm(input, running_mean, running_var, {}, {}, true, 0.1, 1e-5, leaky(slope));
        },
        "negative_slope"));
    EXPECT_EQ(values(running_mean), (std::vector<double>{0.5, 0.5, 0.5}));
    EXPECT_EQ(values(running_var), (std::vector<double>{2, 2, 2}));
    const Normalization norm = normalization_from_batch(batch_stats(input), 1e-5);
    Tensor output = Tensor::full({4, 3}, 7.0, DType::Float64);
    const void* storage = output.raw_data();
    EXPECT_TRUE(throws_error([&] { batch_norm_apply(output, input, norm, {}, {}, leaky(slope)); },
                             "negative_slope"));
    EXPECT_EQ(output.raw_data(), storage);
    for (double v : values(output)) EXPECT_EQ(v, 7.0);
    BatchNormGradients grads;
    EXPECT_TRUE(throws_error(
        [&] { batch_norm_backward(grads, input, input, norm, {}, {}, true, false, leaky(slope)); },
        "negative_slope"));
    EXPECT_FALSE(grads.input.defined());
  }
}

TEST(ActivationErrors, MessageNamesExpectedAndActual) {
  try {
    BatchNorm1d m(options_with(3, leaky(kNaN), DType::Float32));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "negative_slope: expected a finite value, got nan");
  }
}

TEST(ActivationErrors, OutOfRangeActivationIsAnError) {
  const auto bad = static_cast<Activation>(7);
  EXPECT_TRUE(
      throws_error([&] { BatchNorm1d(BatchNorm1dOptions(3).activation(bad)); }, "activation"));
  const Tensor input = make_tensor(random_values(12, 91), {4, 3}, DType::Float64);
  EXPECT_TRUE(throws_error(
      [&] {
        batch_norm(input, {}, {}, {}, {}, true, 0.1, 1e-5, FusedActivation{bad, 0.01});
      },
      "activation"));
}

// act(bn(x)) is not affine: neither neighbouring Linear can absorb it.
TEST(ActivationErrors, FoldRefusesAFusedActivation) {
  BatchNorm1d bn(BatchNorm1dOptions(2).activation(Activation::ReLU));
  bn.eval();
  const Tensor weight = Tensor::ones({2, 2}, DType::Float32);
  EXPECT_TRUE(throws_error([&] { fold_into_preceding(bn, weight, {}); }, "activation=relu"));
  EXPECT_TRUE(throws_error([&] { fold_into_following(bn, weight, {}); }, "activation=relu"));
}

// ---- Text form -------------------------------------------------------------------------------

TEST(ActivationRepr, ShownOnlyWhenSet) {
  std::ostringstream none, relu_text, leaky_text, ghost;
  none << BatchNorm1d(4);
  EXPECT_EQ(none.str(),
            "BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)");
  relu_text << BatchNorm1d(BatchNorm1dOptions(4).activation(Activation::ReLU));
  EXPECT_EQ(relu_text.str(),
            "BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true, "
            "activation=relu)");
  leaky_text << BatchNorm1d(
      BatchNorm1dOptions(4).activation(Activation::LeakyReLU).negative_slope(0.2));
  EXPECT_EQ(leaky_text.str(),
            "BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true, "
            "activation=leaky_relu, negative_slope=0.2)");
  ghost << GhostBatchNorm1d(BatchNorm1dOptions(4).activation(Activation::ReLU), 8);
  EXPECT_NE(ghost.str().find(", activation=relu)"), std::string::npos) << ghost.str();
}

}  // namespace
}  // namespace bn1d::test
