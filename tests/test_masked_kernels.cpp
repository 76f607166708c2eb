// The masked-lane kernels (masks with holes over rows of unit stride) on every compiled target:
// outputs, statistics and gradients equal BatchNorm1d's on the packed valid values, 0 at the
// padding, whatever the padding holds (NaN, inf).
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/simd.hpp"
#include "test_util.hpp"

namespace bn1d::test {
namespace {

namespace simd = kernels::simd;

struct Packed {
  Tensor x, dy;  // (count, C)
};

// The valid values of (N, C, L) @p x and @p dy in (n, l) order, as (count, C) tensors.
Packed pack(const std::vector<double>& x, const std::vector<double>& dy,
            const std::vector<uint8_t>& mask, const Shape& s, DType dtype) {
  const int64_t N = s[0], C = s[1], L = s[2];
  std::vector<double> px, pdy;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t l = 0; l < L; ++l)
      if (mask[n * L + l])
        for (int64_t c = 0; c < C; ++c) {
          px.push_back(x[(n * C + c) * L + l]);
          pdy.push_back(dy[(n * C + c) * L + l]);
        }
  const int64_t count = static_cast<int64_t>(px.size()) / C;
  return {make_tensor(px, {count, C}, dtype), make_tensor(pdy, {count, C}, dtype)};
}

// Values of (N, C, L) @p t at the valid positions in packed order; false in @p pads_zero when a
// padding value is not +0.
std::vector<double> valid_values(const Tensor& t, const std::vector<uint8_t>& mask, const Shape& s,
                                 bool& pads_zero) {
  const int64_t N = s[0], C = s[1], L = s[2];
  const std::vector<double> v = values(t);
  std::vector<double> out;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t c = 0; c < C; ++c) {
        const double e = v[(n * C + c) * L + l];
        if (mask[n * L + l])
          out.push_back(e);
        else if (e != 0.0 || std::signbit(e))
          pads_zero = false;
      }
  return out;
}

::testing::AssertionResult close(const std::vector<double>& got, const std::vector<double>& want,
                                 DType dtype) {
  if (dtype == DType::Float32 || dtype == DType::Float64) return all_close(got, want, dtype);
  for (std::size_t i = 0; i < got.size(); ++i)  // 16-bit: one rounding each, from close values
    if (!(std::fabs(got[i] - want[i]) <= ulp16(want[i], dtype)))
      return ::testing::AssertionFailure()
             << "element " << i << ": " << got[i] << " vs " << want[i];
  return ::testing::AssertionSuccess();
}

void check_target(DType dtype, const Shape& s, double valid_fraction) {
  const int64_t N = s[0], C = s[1], L = s[2];
  std::mt19937 rng(static_cast<unsigned>(N * 7 + L));
  std::normal_distribution<double> normal(3.0, 2.0);
  std::bernoulli_distribution valid(valid_fraction);
  std::vector<double> x(static_cast<std::size_t>(N * C * L)), dy(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = normal(rng), dy[i] = normal(rng);
  std::vector<uint8_t> mask(static_cast<std::size_t>(N * L));
  for (auto& m : mask) m = valid(rng);
  mask[0] = mask[1] = 1;           // at least two valid values
  for (int64_t n = 0; n < N; ++n)  // hostile padding
    for (int64_t l = 0; l < L; ++l)
      if (!mask[n * L + l]) x[(n * C) * L + l] = n % 2 ? NAN : INFINITY;
  const ValidPositions positions = ValidPositions::from_mask(std::span<const uint8_t>(mask), N, L);
  ASSERT_GT(positions.runs().size(), static_cast<std::size_t>(2 * N));  // the masked kernels
  const Packed packed = pack(x, dy, mask, s, dtype);
  const DType param = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
  for (bool eval : {false, true}) {
    BatchNorm1d masked(BatchNorm1dOptions(C).dtype(param)), plain(masked);
    if (eval) {
      masked.forward(make_tensor(x, s, dtype), positions);
      plain.forward(packed.x);
      masked.eval(), plain.eval();
    }
    const Tensor input = make_tensor(x, s, dtype);
    const Tensor y = masked.forward(input, positions), want_y = plain.forward(packed.x);
    const auto grads = masked.backward(make_tensor(dy, s, dtype));
    const auto want = plain.backward(packed.dy);
    bool pads_zero = true;
    EXPECT_TRUE(close(valid_values(y, mask, s, pads_zero), values(want_y), dtype));
    EXPECT_TRUE(close(valid_values(grads.input, mask, s, pads_zero), values(want.input), dtype));
    EXPECT_TRUE(pads_zero);
    EXPECT_TRUE(all_close(grads.weight, values(want.weight), max_abs(values(want.weight))));
    EXPECT_TRUE(all_close(masked.running_var(), values(plain.running_var())));
  }
}

TEST(MaskedKernels, HoleyMasksMatchThePackedBatchOnEveryTarget) {
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
      for (const Shape& s : {Shape{3, 4, 37}, Shape{16, 9, 300}}) {
        SCOPED_TRACE(target + " " + dtype_name(dtype) + " L=" + std::to_string(s[2]));
        check_target(dtype, s, 0.6);
      }
    }
  }
  simd::force_target("");
}

}  // namespace
}  // namespace bn1d::test
