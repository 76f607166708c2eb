// BatchNorm1d with bfloat16/float16 inputs, in the mixed (float32/float64 parameters) and pure
// (16-bit parameters) configurations, against a float64 oracle computed from the exact 16-bit
// values: outputs and grad_input within 1 ulp of the oracle rounded once; running statistics and
// parameter gradients within the float32 bounds (mixed) or 1 ulp (pure). Every layout, (N, C) and
// (N, C, L), train, eval (with its caching), infer() and forward(input, out).
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <memory>
#include <string>
#include <vector>

#include "format.hpp"
#include "oracle_16bit.hpp"
#include "test_util.hpp"

namespace bn1d::test {
namespace {

const Layout kLayouts[] = {Layout::Contiguous, Layout::ChannelsLast, Layout::Sliced,
                           Layout::ColumnMajor};
// Wide enough for the SIMD kernels' vector bodies and tails; the last two have short rows or
// few channels, which the kernels regroup as virtual channels.
const Shape kShapes[] = {{67, 11}, {7, 6, 37}, {203, 13}, {33, 16, 5}};

/// Calls body(k, sizes, layout) for every configuration, shape and layout, under a trace that
/// names them.
template <class F>
void for_every_case(const F& body) {
  for (const Config& k : kConfigs)
    for (const Shape& sizes : kShapes)
      for (Layout layout : kLayouts) {
        SCOPED_TRACE(config_name(k) + ", " + format_shape(sizes) + " " + layout_name(layout));
        body(k, sizes, layout);
      }
}

/// A module of config @p k with random weight, bias and running statistics; @p p receives them.
BatchNorm1d make_module(const Config& k, int64_t C, Params64& p, uint64_t seed) {
  BatchNorm1d m(BatchNorm1dOptions(C).dtype(k.param).momentum(0.25));
  const auto n = static_cast<std::size_t>(C);
  p.weight = assign(m.weight(), uniform(n, 0.5, 2.0, k.param, seed));
  p.bias = assign(m.bias(), uniform(n, -1.0, 1.0, k.param, seed + 1));
  p.running_mean = assign(m.running_mean(), uniform(n, -0.5, 0.5, k.param, seed + 2));
  p.running_var = assign(m.running_var(), uniform(n, 0.5, 3.0, k.param, seed + 3));
  return m;
}

/// Random logical input values for @p sizes (mean and scale differ per element), exact in @p dtype.
std::vector<double> input_values(const Shape& sizes, DType dtype, uint64_t seed) {
  std::vector<double> v = values(randn(sizes, DType::Float64, seed));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 1.5 * v[i] + 0.25;
  return round_to(v, dtype);
}

/// Checks the module's running statistics against the oracle's.
void expect_running(const BatchNorm1d& m, const Forward64& want) {
  EXPECT_TRUE(channel_close(m.running_mean(), want.running_mean));
  EXPECT_TRUE(channel_close(m.running_var(), want.running_var));
}

/// Checks backward() of @p m (after a forward of @p x) for a random grad_output in @p layout.
void expect_backward(BatchNorm1d& m, const Config& k, const std::vector<double>& x,
                     const Shape& sizes, Layout layout, const Params64& p, const Forward64& f,
                     bool batch_stats) {
  const std::vector<double> dy = input_values(sizes, k.input, 99);
  std::shared_ptr<std::vector<char>> keep;
  const BatchNorm1d::Gradients g = m.backward(make_strided(dy, sizes, k.input, layout, keep));
  const Backward64 want = oracle_backward(x, dy, sizes, p, f, batch_stats);
  ASSERT_EQ(g.input.dtype(), k.input);
  ASSERT_EQ(g.weight.dtype(), k.param);
  ASSERT_EQ(g.bias.dtype(), k.param);
  EXPECT_TRUE(within_1ulp(values(g.input), want.dx, k.input));
  EXPECT_TRUE(channel_close(g.weight, want.dw, max_abs(want.scale_dw)));
  EXPECT_TRUE(channel_close(g.bias, want.db, max_abs(want.scale_db)));
}

TEST(Module16, TrainForwardAndBackwardEveryConfigLayoutShape) {
  for_every_case([](const Config& k, const Shape& sizes, Layout layout) {
    Params64 p;
    BatchNorm1d m = make_module(k, sizes[1], p, 7);
    const std::vector<double> x = input_values(sizes, k.input, 11);
    std::shared_ptr<std::vector<char>> keep;
    const Tensor y = m(make_strided(x, sizes, k.input, layout, keep));
    const Forward64 f = oracle_forward(x, sizes, p, true, 0.25, 1e-5);
    ASSERT_EQ(y.dtype(), k.input);
    ASSERT_EQ(y.sizes(), sizes);
    EXPECT_TRUE(within_1ulp(values(y), f.y, k.input));
    ASSERT_EQ(m.running_mean().dtype(), k.param);
    expect_running(m, f);
    EXPECT_EQ(m.num_batches_tracked(), 1);
    expect_backward(m, k, x, sizes, layout, p, f, true);
  });
}

TEST(Module16, EvalUsesRunningStatisticsAndBackwardIsLinear) {
  for_every_case([](const Config& k, const Shape& sizes, Layout layout) {
    Params64 p;
    BatchNorm1d m = make_module(k, sizes[1], p, 17);
    m.eval();
    const std::vector<double> x = input_values(sizes, k.input, 21);
    std::shared_ptr<std::vector<char>> keep;
    const Tensor y = m(make_strided(x, sizes, k.input, layout, keep));
    const Forward64 f = oracle_forward(x, sizes, p, false, 0.25, 1e-5);
    EXPECT_TRUE(within_1ulp(values(y), f.y, k.input));
    EXPECT_EQ(values(m.running_mean()), p.running_mean);  // eval leaves them alone
    EXPECT_EQ(values(m.running_var()), p.running_var);
    EXPECT_EQ(m.num_batches_tracked(), 0);
    expect_backward(m, k, x, sizes, layout, p, f, false);
  });
}

TEST(Module16, EvalCachingSeesEveryChangeOfTheRunningStatistics) {
  const Shape sizes = {9, 5, 13};
  for (const Config& k : kConfigs) {
    SCOPED_TRACE(config_name(k));
    Params64 p;
    BatchNorm1d m = make_module(k, 5, p, 31);
    const std::vector<double> x = input_values(sizes, k.input, 32);
    const Tensor input = make_tensor(x, sizes, k.input);
    m.eval();
    EXPECT_TRUE(
        within_1ulp(values(m(input)), oracle_forward(x, sizes, p, false, 0, 1e-5).y, k.input));
    // In place through the accessor: the next eval forward must see the new values.
    p.running_var = assign(m.running_var(), uniform(5, 4.0, 9.0, k.param, 33));
    p.running_mean = assign(m.running_mean(), uniform(5, 1.0, 2.0, k.param, 34));
    EXPECT_TRUE(
        within_1ulp(values(m(input)), oracle_forward(x, sizes, p, false, 0, 1e-5).y, k.input));
    // A training step moves the running statistics; eval afterwards uses the moved ones.
    m.train();
    const std::vector<double> x2 = input_values(sizes, k.input, 35);
    const Forward64 trained = oracle_forward(x2, sizes, p, true, 0.25, 1e-5);
    m(make_tensor(x2, sizes, k.input));
    expect_running(m, trained);
    m.eval();
    p.running_mean = values(m.running_mean());  // the module's rounded values
    p.running_var = values(m.running_var());
    EXPECT_TRUE(
        within_1ulp(values(m(input)), oracle_forward(x, sizes, p, false, 0, 1e-5).y, k.input));
  }
}

TEST(Module16, InferUsesRunningStatisticsAndChangesNothing) {
  for (const Config& k : kConfigs)
    for (const Shape& sizes : kShapes) {
      SCOPED_TRACE(config_name(k) + ", " + format_shape(sizes));
      Params64 p;
      BatchNorm1d m = make_module(k, sizes[1], p, 41);  // training mode: infer() ignores it
      const std::vector<double> x = input_values(sizes, k.input, 42);
      std::shared_ptr<std::vector<char>> keep;
      const Tensor y = m.infer(make_strided(x, sizes, k.input, Layout::ChannelsLast, keep));
      EXPECT_EQ(y.dtype(), k.input);
      EXPECT_TRUE(within_1ulp(values(y), oracle_forward(x, sizes, p, false, 0, 1e-5).y, k.input));
      EXPECT_EQ(values(m.running_mean()), p.running_mean);
      EXPECT_EQ(values(m.running_var()), p.running_var);
      EXPECT_EQ(m.num_batches_tracked(), 0);
      EXPECT_TRUE(
          throws_error([&] { m.backward(y); }, "backward called before forward"));  // nothing saved
    }
}

TEST(Module16, ForwardIntoACallerBufferReusesIt) {
  const Shape sizes = {8, 6, 21};
  for (const Config& k : kConfigs) {
    SCOPED_TRACE(config_name(k));
    Params64 p;
    BatchNorm1d m = make_module(k, 6, p, 51);
    const std::vector<double> x = input_values(sizes, k.input, 52);
    // Contiguous input, contiguous buffer of the input dtype: reused.
    Tensor out = Tensor::empty(sizes, k.input);
    const void* const buffer = out.raw_data();
    m.forward(make_tensor(x, sizes, k.input), out);
    Forward64 f = oracle_forward(x, sizes, p, true, 0.25, 1e-5);
    EXPECT_EQ(out.raw_data(), buffer);
    EXPECT_TRUE(within_1ulp(values(out), f.y, k.input));
    // Channels-last input and channels-last buffer: reused, strides kept.
    p.running_mean = values(m.running_mean());
    p.running_var = values(m.running_var());
    std::shared_ptr<std::vector<char>> kin, kout;
    const Tensor input = make_strided(x, sizes, k.input, Layout::ChannelsLast, kin);
    Tensor cl_out =
        make_strided(std::vector<double>(x.size()), sizes, k.input, Layout::ChannelsLast, kout);
    const void* const cl_buffer = cl_out.raw_data();
    m.forward(input, cl_out);
    f = oracle_forward(x, sizes, p, true, 0.25, 1e-5);
    EXPECT_EQ(cl_out.raw_data(), cl_buffer);
    EXPECT_EQ(cl_out.strides(), input.strides());
    EXPECT_TRUE(within_1ulp(values(cl_out), f.y, k.input));
    expect_running(m, f);
    // A mixed module's buffer of the parameter dtype is the wrong dtype: replaced by one of the
    // input dtype, never written.
    if (k.param == k.input) continue;
    Tensor wrong = Tensor::zeros(sizes, k.param);
    const std::vector<double> wrong_before = values(wrong);
    const Tensor kept = wrong;
    m.eval();
    m.forward(input, wrong);
    EXPECT_EQ(wrong.dtype(), k.input);
    EXPECT_EQ(values(kept), wrong_before);
  }
}

TEST(Module16, BackwardIntoCallerBuffersReusesThem) {
  const Shape sizes = {12, 5, 17};
  for (const Config& k : kConfigs) {
    SCOPED_TRACE(config_name(k));
    Params64 p;
    BatchNorm1d m = make_module(k, 5, p, 61);
    const std::vector<double> x = input_values(sizes, k.input, 62);
    const std::vector<double> dy = input_values(sizes, k.input, 63);
    std::shared_ptr<std::vector<char>> kx, kdy, kdx;
    m(make_strided(x, sizes, k.input, Layout::ChannelsLast, kx));
    BatchNorm1d::Gradients g{
        make_strided(std::vector<double>(x.size()), sizes, k.input, Layout::ChannelsLast, kdx),
        Tensor::empty({5}, k.param), Tensor::empty({5}, k.param)};
    const void* const buffers[] = {g.input.raw_data(), g.weight.raw_data(), g.bias.raw_data()};
    m.backward(make_strided(dy, sizes, k.input, Layout::ChannelsLast, kdy), g);
    EXPECT_EQ(g.input.raw_data(), buffers[0]);
    EXPECT_EQ(g.weight.raw_data(), buffers[1]);
    EXPECT_EQ(g.bias.raw_data(), buffers[2]);
    const Forward64 f = oracle_forward(x, sizes, p, true, 0.25, 1e-5);
    const Backward64 want = oracle_backward(x, dy, sizes, p, f, true);
    EXPECT_TRUE(within_1ulp(values(g.input), want.dx, k.input));
    EXPECT_TRUE(channel_close(g.weight, want.dw, max_abs(want.scale_dw)));
    EXPECT_TRUE(channel_close(g.bias, want.db, max_abs(want.scale_db)));
  }
}

TEST(Module16, WithoutAffineOrTrackingAndOnEmptyBatches) {
  const Shape sizes = {10, 4, 6};
  for (const Config& k : kConfigs) {
    SCOPED_TRACE(config_name(k));
    BatchNorm1d m(BatchNorm1dOptions(4).dtype(k.param).affine(false).track_running_stats(false));
    const std::vector<double> x = input_values(sizes, k.input, 71);
    const Tensor input = make_tensor(x, sizes, k.input);
    const Forward64 f = oracle_forward(x, sizes, Params64{}, true, 0, 1e-5);
    EXPECT_TRUE(within_1ulp(values(m(input)), f.y, k.input));
    const std::vector<double> dy = input_values(sizes, k.input, 72);
    const BatchNorm1d::Gradients g = m.backward(make_tensor(dy, sizes, k.input));
    EXPECT_TRUE(within_1ulp(values(g.input), oracle_backward(x, dy, sizes, Params64{}, f, true).dx,
                            k.input));
    EXPECT_FALSE(g.weight.defined());
    m.eval();  // no running statistics: batch statistics in eval mode too
    EXPECT_TRUE(within_1ulp(values(m(input)), f.y, k.input));
    // An empty batch gives an empty output of the input dtype and changes nothing.
    Params64 p;
    BatchNorm1d tracked = make_module(k, 4, p, 73);
    const Tensor empty = tracked(Tensor::empty({0, 4, 3}, k.input));
    EXPECT_EQ(empty.dtype(), k.input);
    EXPECT_EQ(empty.numel(), 0);
    EXPECT_EQ(values(tracked.running_var()), p.running_var);
    EXPECT_EQ(tracked.num_batches_tracked(), 0);
  }
}

}  // namespace
}  // namespace bn1d::test
