// The per-channel kernels (running statistics, scales, gradient coefficients, the merge of
// partition results): every compiled SIMD target gives the scalar reference's bits, the
// reference follows the documented conventions, and {C} tensors with any stride go through them.
#include <gtest/gtest.h>

#include <bit>
#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/reference.hpp"
#include "kernels/simd.hpp"
#include "test_util.hpp"

namespace bn1d::test {
namespace {

namespace simd = kernels::simd;
namespace reference = kernels::reference;

// Same bits, or both NaN.
bool same(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) ||
         std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b);
}

void expect_same(const std::vector<double>& got, const std::vector<double>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(same(got[i], want[i])) << what << "[" << i << "]: " << got[i] << " vs " << want[i];
}

// 37 values (four AVX-512 vectors and a tail of 5): random ones, and the special values a
// per-channel array can hold (signed zeros, denormals, huge, infinite, NaN).
std::vector<double> channel_values(uint64_t seed) {
  std::vector<double> v = values(randn({37}, DType::Float64, seed));
  const double inf = std::numeric_limits<double>::infinity();
  v[3] = 0.0, v[4] = -0.0, v[9] = 5e-324, v[17] = 1e300, v[21] = -inf, v[30] = inf;
  v[33] = std::numeric_limits<double>::quiet_NaN(), v[35] = -1e-310;
  return v;
}

TEST(ChannelKernels, EveryTargetGivesTheReferenceBits) {
  const std::vector<double> a = channel_values(1), b = channel_values(2), c = channel_values(3),
                            d = channel_values(4), invstd = values(randn({37}, DType::Float64, 5));
  const auto C = static_cast<int64_t>(a.size());
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    SCOPED_TRACE("target " + target);
    for (double momentum : {0.1, 1.0 / 3.0}) {
      std::vector<double> want_m = a, want_v = b, got_m = a, got_v = b;
      reference::running_update(want_m.data(), want_v.data(), c.data(), d.data(), momentum,
                                1.0 / 9.0, C);
      simd::running_update(got_m.data(), got_v.data(), c.data(), d.data(), momentum, 1.0 / 9.0, C);
      expect_same(got_m, want_m, "running mean");
      expect_same(got_v, want_v, "running var");
    }
    for (bool weighted : {true, false}) {
      for (bool batch : {true, false}) {
        std::vector<double> wa(a.size()), wb(a.size()), wk(a.size());
        std::vector<double> ga(a.size()), gb(a.size()), gk(a.size());
        const double* w = weighted ? a.data() : nullptr;
        const double* sum_dy = batch ? b.data() : nullptr;
        const double* sum_dy_xmu = batch ? c.data() : nullptr;
        reference::backward_coefficients(wa.data(), wb.data(), wk.data(), w, invstd.data(), sum_dy,
                                         sum_dy_xmu, 7.0, C);
        simd::backward_coefficients(ga.data(), gb.data(), gk.data(), w, invstd.data(), sum_dy,
                                    sum_dy_xmu, 7.0, C);
        expect_same(ga, wa, "a");
        expect_same(gb, wb, "b");
        expect_same(gk, wk, "k");
      }
    }
    for (bool first : {true, false}) {
      std::vector<double> want_m = a, want_q = b, got_m = a, got_q = b;
      reference::merge_slot(want_m.data(), want_q.data(), c.data(), d.data(), 0.25, 1.5, first, C);
      simd::merge_slot(got_m.data(), got_q.data(), c.data(), d.data(), 0.25, 1.5, first, C);
      expect_same(got_m, want_m, "merged mean");
      expect_same(got_q, want_q, "merged m2");
      std::vector<double> want_a = a, want_b = b, got_a = a, got_b = b;
      reference::add_slot(want_a.data(), want_b.data(), c.data(), d.data(), first, C);
      simd::add_slot(got_a.data(), got_b.data(), c.data(), d.data(), first, C);
      expect_same(got_a, want_a, "sum a");
      expect_same(got_b, want_b, "sum b");
    }
    std::vector<double> product(a.size()), want_product(a.size());
    simd::multiply(product.data(), a.data(), b.data(), C);
    for (std::size_t i = 0; i < a.size(); ++i) want_product[i] = a[i] * b[i];
    expect_same(product, want_product, "product");
    // Conversions: float32 → float64 is exact; float64 → float32 rounds once, as a cast does.
    std::vector<float> f(a.size()), f_want(a.size());
    std::vector<double> back(a.size()), back_want(a.size());
    simd::from_f64(f.data(), DType::Float32, a.data(), C);
    simd::to_f64(back.data(), f.data(), DType::Float32, C);
    for (std::size_t i = 0; i < a.size(); ++i) {
      f_want[i] = static_cast<float>(a[i]);
      back_want[i] = static_cast<double>(f_want[i]);
    }
    expect_same(back, back_want, "float32 round trip");
    std::vector<double> copy(a.size());
    simd::from_f64(copy.data(), DType::Float64, a.data(), C);
    expect_same(copy, a, "float64 store");
    simd::to_f64(copy.data(), b.data(), DType::Float64, C);
    expect_same(copy, b, "float64 load");
  }
  simd::force_target("");
}

TEST(ChannelKernels, FirstNegativeSumOnEveryTarget) {
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    SCOPED_TRACE("target " + target);
    std::vector<double> v(37, 1.0);
    v[11] = -1e-6;                                    // made non-negative by eps = 1e-5
    v[20] = std::numeric_limits<double>::infinity();  // a valid (infinite) variance
    EXPECT_EQ(simd::first_negative_sum(v.data(), 1e-5, 37), 37);
    EXPECT_EQ(simd::first_negative_sum(v.data(), 0.0, 37), 11);
    // NaN is no variance: reported like a negative one, in a vector body and in the tail.
    for (int64_t at : {0, 5, 13, 34, 36}) {
      std::vector<double> w(37, 0.5);
      w[static_cast<std::size_t>(at)] = std::numeric_limits<double>::quiet_NaN();
      EXPECT_EQ(simd::first_negative_sum(w.data(), 1e-5, 37), at);
      w[36] = -std::numeric_limits<double>::infinity();
      EXPECT_EQ(simd::first_negative_sum(w.data(), 1e-5, 37), at);
    }
    for (int64_t at : {0, 13, 34, 36}) {  // in a vector body and in the tail
      std::vector<double> w(37, 0.5);
      w[static_cast<std::size_t>(at)] = -2.0;
      w[36] = at == 36 ? -2.0 : -3.0;  // a later one is not reported first
      EXPECT_EQ(simd::first_negative_sum(w.data(), 1e-5, 37), at);
    }
  }
  simd::force_target("");
}

// The reference against values worked out by hand (powers of two: every result exact).
TEST(ChannelKernels, ReferenceFollowsTheDocumentedConventions) {
  // Momentum weighs the batch's value; the variance is made unbiased by unbias = 1 / (n − 1).
  double rmean = 1.0, rvar = 2.0;
  const double mean = 5.0, m2 = 12.0;
  reference::running_update(&rmean, &rvar, &mean, &m2, 0.25, 1.0 / 4.0, 1);
  EXPECT_EQ(rmean, 0.75 * 1.0 + 0.25 * 5.0);
  EXPECT_EQ(rvar, 0.75 * 2.0 + 0.25 * 3.0);
  // g = w · invstd = 1, k = −g · Σdy / n = −1, b = −g · invstd² · Σdy(x − mean) / n = −0.5.
  double a = 0, b = 0, k = 0;
  const double w = 2.0, invstd = 0.5, sum_dy = 4.0, sum_dy_xmu = 8.0;
  reference::backward_coefficients(&a, &b, &k, &w, &invstd, &sum_dy, &sum_dy_xmu, 4.0, 1);
  EXPECT_EQ(a, 1.0);
  EXPECT_EQ(k, -1.0);
  EXPECT_EQ(b, -0.5);
  reference::backward_coefficients(&a, &b, &k, nullptr, &invstd, nullptr, nullptr, 4.0, 1);
  EXPECT_EQ(a, 0.5);
  EXPECT_EQ(k, 0.0);
  EXPECT_EQ(b, 0.0);
  // Merging (mean 3, M2 2) of 1 value into (mean 1, M2 0) of 1 value: mean 2, M2 2 + 2 = 4.
  double merged_mean = 1.0, merged_m2 = 0.0;
  const double part_mean = 3.0, part_m2 = 2.0;
  reference::merge_slot(&merged_mean, &merged_m2, &part_mean, &part_m2, 0.5, 0.5, false, 1);
  EXPECT_EQ(merged_mean, 2.0);
  EXPECT_EQ(merged_m2, 4.0);
}

// A {C} view with stride 2 into a buffer, holding `v` at its even elements and `fill` between.
Tensor every_other(std::vector<double>& storage, const std::vector<double>& v, double fill) {
  storage.assign(2 * v.size(), fill);
  for (std::size_t i = 0; i < v.size(); ++i) storage[2 * i] = v[i];
  return Tensor::from_blob(storage.data(), {static_cast<int64_t>(v.size())}, {2}, DType::Float64);
}

// Weight, bias and running statistics that are strided views give the results of contiguous
// copies, and the running statistics' update writes their elements only.
TEST(ChannelKernels, StridedChannelTensorsGiveTheContiguousResults) {
  const int64_t C = 19;
  const Tensor x = randn({6, C}, DType::Float64, 1), dy = randn({6, C}, DType::Float64, 2);
  const std::vector<double> w = values(randn({C}, DType::Float64, 3)),
                            bias = values(randn({C}, DType::Float64, 4));
  std::vector<double> ws, bs, ms, vs;
  const Tensor sw = every_other(ws, w, 7.0), sb = every_other(bs, bias, 7.0);
  const Tensor sm = every_other(ms, std::vector<double>(C, 0.5), 7.0);
  const Tensor sv = every_other(vs, std::vector<double>(C, 2.0), 7.0);
  const Tensor cw = sw.contiguous(), cb = sb.contiguous(), cm = sm.contiguous(),
               cv = sv.contiguous();
  ASSERT_FALSE(sw.is_contiguous());
  for (bool training : {true, false}) {
    SCOPED_TRACE(training ? "training" : "eval");
    const Tensor y_strided = batch_norm(x, sm, sv, sw, sb, training, 0.1, 1e-5);
    const Tensor y = batch_norm(x, cm, cv, cw, cb, training, 0.1, 1e-5);
    EXPECT_EQ(values(y_strided), values(y));
    EXPECT_EQ(values(sm), values(cm));
    EXPECT_EQ(values(sv), values(cv));
  }
  for (std::size_t i = 1; i < ms.size(); i += 2) EXPECT_EQ(ms[i], 7.0) << i;
  for (std::size_t i = 1; i < vs.size(); i += 2) EXPECT_EQ(vs[i], 7.0) << i;
  const Normalization norm = normalization_from_batch(batch_stats(x), 1e-5);
  const GradStats g = backward_stats(dy, x, norm);
  EXPECT_EQ(values(batch_norm_backward_input(dy, x, norm, sw, g, true)),
            values(batch_norm_backward_input(dy, x, norm, cw, g, true)));
  // A strided running variance with a negative value is named by its logical index.
  std::vector<double> bad_storage;
  std::vector<double> bad(C, 1.0);
  bad[17] = -1.0;
  const Tensor bad_var = every_other(bad_storage, bad, -5.0);
  EXPECT_TRUE(throws_error([&] { (void)normalization_from_running(cm, bad_var, 1e-5); },
                           "running_var[17] = -1.0"));
}

}  // namespace
}  // namespace bn1d::test
