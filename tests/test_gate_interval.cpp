// The gradient sums' gate as an interval of inputs (kernels/gate_interval.hpp) against its
// definition: an input x is in the interval exactly when ReLU blocks it (z ≤ kActiveAbove) or
// LeakyReLU passes it (z > kActiveAbove), z formed by ActChannel::input (activation.hpp). Every
// bfloat16 and float16 value is checked; float32 and float64 at the interval's ends and on samples.
// Then the SIMD sums on every target against the scalar oracle where the interval is unusual:
// zero and negative scales, infinite inputs, a mean so large that x − mean overflows.
#include <gtest/gtest.h>

#include <bit>
#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "format.hpp"
#include "kernels/element.hpp"
#include "kernels/gate_interval.hpp"
#include "kernels/reference.hpp"
#include "kernels/simd.hpp"
#include "test_util.hpp"
#include "validate.hpp"

namespace bn1d::test {
namespace {

using kernels::Act;
using kernels::GateInterval;
using kernels::GateTest;

struct Channel {
  double mean, scale, shift;
};

// Means, scales and shifts of both signs, tiny and huge; zero scales (z constant but NaN where
// x − mean overflows) with shifts on both sides of 0.
const Channel kChannels[] = {
    {0.0, 1.0, 0.0},     {0.3, 2.5, -0.1},    {-1.7, -0.8, 0.4},  {1e-3, 1e4, 1e-6},
    {0.5, 0.0, -1.0},    {0.5, 0.0, 2.0},     {0.0, 0.0, 0.0},    {-3.0, 1e-30, 0.0},
    {100.0, -1e-3, 1.0}, {1e-7, 3.0, -1e-9},  {7.0, 1e30, -2.0},  {0.1, -0x1.0p-20, 5e-8},
    {1e30, 1e-30, 0.0},  {-0.25, 1.0, 1e-40}, {2.0, -7.0, -14.0}, {0.0, 0x1.0p-130, 0.0},
};

const Activation kKinds[] = {Activation::ReLU, Activation::LeakyReLU};

// The definition: whether the gate acts on x (ReLU blocks it, or LeakyReLU passes it).
template <class T>
bool gated(Activation kind, const Channel& ch, T x) {
  using CT = kernels::ActCompute<T>;
  const auto channel = kernels::ActChannel<T>::of(ch.mean, ch.scale, ch.shift, 0.0);
  const CT z = channel.input(static_cast<CT>(kernels::widen(x)));
  return (kind == Activation::ReLU) != kernels::act_passes<T>(kind, z);
}

template <class T>
T from_bits(uint64_t bits) {
  if constexpr (sizeof(T) == 2)
    return T{static_cast<uint16_t>(bits)};
  else if constexpr (sizeof(T) == 4)
    return std::bit_cast<float>(static_cast<uint32_t>(bits));
  else
    return std::bit_cast<double>(bits);
}

template <class T>
void check_sixteen_bit(DType dtype) {
  for (const Channel& ch : kChannels) {
    for (Activation kind : kKinds) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + activation_name(kind) + " mean " +
                   std::to_string(ch.mean) + " scale " + std::to_string(ch.scale) + " shift " +
                   std::to_string(ch.shift));
      GateInterval in{};
      ASSERT_TRUE(kernels::gate_interval(dtype, kind, ch.mean, ch.scale, ch.shift, in));
      GateTest test{};
      ASSERT_TRUE(kernels::gate_test(in, test));  // 16-bit x − mean never overflows float64
      int wrong = 0;
      for (uint32_t bits = 0; bits < 0x10000; ++bits) {
        const T x = from_bits<T>(bits);
        const double xd = kernels::widen(x);
        if (std::isnan(xd)) {
          EXPECT_FALSE(test.holds(xd));
          continue;
        }
        const bool want = gated(kind, ch, x);
        wrong += (xd >= in.lo && xd <= in.hi) != want || test.holds(xd) != want;
      }
      EXPECT_EQ(wrong, 0);
    }
  }
}

TEST(GateInterval, HoldsExactlyTheGatedValuesOfEverySixteenBitInput) {
  check_sixteen_bit<BFloat16>(DType::BFloat16);
  check_sixteen_bit<Float16>(DType::Float16);
}

// The neighbouring value of x towards +inf (up) or −inf.
template <class T>
T step(T x, bool up) {
  return std::nextafter(
      x, up ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity());
}

template <class T>
void check_wide(DType dtype) {
  std::mt19937_64 rng(7);
  for (const Channel& ch : kChannels) {
    for (Activation kind : kKinds) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + activation_name(kind) + " mean " +
                   std::to_string(ch.mean) + " scale " + std::to_string(ch.scale));
      GateInterval in{};
      ASSERT_TRUE(kernels::gate_interval(dtype, kind, ch.mean, ch.scale, ch.shift, in));
      GateTest test{};
      const bool has_test = kernels::gate_test(in, test);
      const auto lo = static_cast<T>(in.lo), hi = static_cast<T>(in.hi);
      if (in.lo <= in.hi) {  // both ends in, their outer neighbours out
        EXPECT_TRUE(gated(kind, ch, lo) && gated(kind, ch, hi));
        if (!std::isinf(lo)) {
          EXPECT_FALSE(gated(kind, ch, step(lo, false)));
        }
        if (!std::isinf(hi)) {
          EXPECT_FALSE(gated(kind, ch, step(hi, true)));
        }
      }
      std::vector<T> xs;
      for (T end : {lo, hi, static_cast<T>(ch.mean), T{0}}) {
        if (std::isinf(end)) continue;
        for (bool up : {false, true})
          for (T v = end; int i : {0, 1, 2, 3}) xs.push_back(v = i == 0 ? v : step(v, up));
      }
      for (int i = 0; i < 20000; ++i) xs.push_back(from_bits<T>(rng()));
      int wrong = 0;
      for (T x : xs) {
        if (std::isnan(x)) continue;
        const bool want = gated(kind, ch, x);
        wrong += (x >= lo && x <= hi) != want;
        if (has_test) wrong += test.holds(static_cast<double>(x)) != want;
      }
      EXPECT_EQ(wrong, 0);
    }
  }
}

TEST(GateInterval, HoldsTheGatedFloat32AndFloat64Values) {
  check_wide<float>(DType::Float32);
  check_wide<double>(DType::Float64);
}

TEST(GateInterval, TestsTakeOneSidedSymmetricAndEmptyIntervals) {
  GateTest t{};
  ASSERT_TRUE(kernels::gate_test({-INFINITY, 2.0}, t));
  EXPECT_TRUE(t.holds(-INFINITY) && t.holds(2.0) && !t.holds(2.5) && !t.holds(NAN));
  ASSERT_TRUE(kernels::gate_test({-0.0, INFINITY}, t));
  EXPECT_TRUE(t.holds(0.0) && t.holds(INFINITY) && !t.holds(-1e-300) && !t.holds(NAN));
  ASSERT_TRUE(kernels::gate_test({-3.0, 3.0}, t));
  EXPECT_TRUE(t.holds(-3.0) && t.holds(3.0) && !t.holds(-INFINITY) && !t.holds(3.5));
  ASSERT_TRUE(kernels::gate_test({INFINITY, -INFINITY}, t));
  EXPECT_TRUE(!t.holds(-INFINITY) && !t.holds(0.0) && !t.holds(INFINITY));
  EXPECT_FALSE(kernels::gate_test({-1.0, 2.0}, t));
  // Non-finite z parameters in the compute type: no interval.
  GateInterval in{};
  EXPECT_FALSE(kernels::gate_interval(DType::Float32, Activation::ReLU, 1e39, 1.0, 0.0, in));
  EXPECT_FALSE(kernels::gate_interval(DType::Float64, Activation::ReLU, 0.0, NAN, 0.0, in));
}

// The float32 tests found a vector of channels at a time (simd::gate_tests) equal the scalar
// search's on every target: channels of kChannels and random ones, whose crossings fall at, next
// to and a few values from the guess, and zero scales.
TEST(GateInterval, VectorSearchGivesTheScalarTests) {
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> mean, scale, shift;
  for (int i = 0; i < 4; ++i)
    for (const Channel& ch : kChannels) {
      mean.push_back(ch.mean), scale.push_back(ch.scale), shift.push_back(ch.shift);
    }
  for (int i = 0; i < 3000; ++i) {
    mean.push_back(normal(rng)), shift.push_back(i % 3 == 0 ? -mean.back() : normal(rng));
    scale.push_back(i % 50 == 0 ? 0.0 : std::ldexp(normal(rng), static_cast<int>(rng() % 40) - 20));
  }
  const auto C = static_cast<int64_t>(mean.size());
  for (Activation kind : kKinds) {
    std::vector<uint64_t> keep(mean.size()), flip(mean.size());
    std::vector<double> max(mean.size());
    ASSERT_TRUE(kernels::gate_tests(DType::Float32, kind, mean.data(), scale.data(), shift.data(),
                                    C, keep.data(), flip.data(), max.data()));
    for (const std::string& target : kernels::simd::targets()) {
      kernels::simd::force_target(target);
      SCOPED_TRACE(target + " " + activation_name(kind));
      std::vector<uint64_t> vkeep(mean.size()), vflip(mean.size());
      std::vector<double> vmax(mean.size());
      ASSERT_TRUE(kernels::simd::gate_tests(DType::Float32, kind, mean.data(), scale.data(),
                                            shift.data(), C, vkeep.data(), vflip.data(),
                                            vmax.data()));
      int wrong = 0;
      for (std::size_t c = 0; c < mean.size(); ++c)
        wrong += vkeep[c] != keep[c] || vflip[c] != flip[c] ||
                 std::bit_cast<uint64_t>(vmax[c]) != std::bit_cast<uint64_t>(max[c]);
      EXPECT_EQ(wrong, 0);
    }
  }
  kernels::simd::force_target("");
  // A channel with no test (a float32 mean of 3e38 with scale 0), or non-finite parameters.
  for (const double m : {3e38, 1e39}) {
    std::vector<double> mean2(40, 0.5), scale2(40, 1.0), shift2(40, 0.0), max2(40);
    std::vector<uint64_t> keep2(40), flip2(40);
    mean2[21] = m, scale2[21] = 0.0;
    EXPECT_FALSE(kernels::simd::gate_tests(DType::Float32, Activation::ReLU, mean2.data(),
                                           scale2.data(), shift2.data(), 40, keep2.data(),
                                           flip2.data(), max2.data()));
  }
}

// The SIMD sums against the oracle on every target, channels-first (rows) and (N, C) (cols, 20
// channels: vectors and a tail), at inputs where the gate is unusual: ±inf (0 · inf in a blocked
// value's term is NaN, as in torch), zero scales with shifts of both signs, negative scales. Then
// a float32 mean near the top of the range with a zero scale, where x − mean overflows for
// negative x only: LeakyReLU's interval has no one-comparison test there (the call takes the
// oracle's path), ReLU's is empty.
void check_unusual_sums(const std::vector<double>& mean, const std::vector<double>& scale,
                        const std::vector<double>& shift) {
  const auto C = static_cast<int64_t>(mean.size());
  for (const std::string& target : kernels::simd::targets()) {
    kernels::simd::force_target(target);
    for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
      for (Activation kind : kKinds) {
        for (const Shape& shape : {Shape{3, C, 40}, Shape{2, C, 300}, Shape{50, C}}) {
          SCOPED_TRACE(target + " " + dtype_name(dtype) + " " + activation_name(kind) + " " +
                       format_shape(shape));
          const auto size =
              static_cast<std::size_t>(shape[0] * shape[1] * (shape.size() == 3 ? shape[2] : 1));
          std::vector<double> xv(size), gv(size);
          for (std::size_t i = 0; i < size; ++i) {
            const double sign = i % 2 ? 1.0 : -1.0;
            xv[i] = i % 7 == 3 ? sign * INFINITY : sign * 0.37 * static_cast<double>(i % 11);
            gv[i] = 0.5 + static_cast<double>(i % 5);
          }
          const Tensor xt = make_tensor(xv, shape, dtype), gt = make_tensor(gv, shape, dtype);
          const kernels::View3 x = detail::input_view(xt), dy = detail::input_view(gt);
          const auto layout = shape.size() == 3 ? kernels::simd::Layout::UnitStrideL
                                                : kernels::simd::Layout::UnitStrideC;
          ASSERT_TRUE(kernels::simd::layout_applies(layout, x));
          const Act act{kind, 0.01, scale.data(), shift.data()};
          const auto channels = static_cast<std::size_t>(C);
          std::vector<double> s(channels), sx(channels), rs(channels), rsx(channels);
          kernels::reference::backward_sums(rs.data(), rsx.data(), dy, x, mean.data(), act);
          kernels::simd::backward_sums(layout, s.data(), sx.data(), dy, x, mean.data(), act);
          // Sums in another order: equal to float64 roundings (a gate decided otherwise changes
          // them by at least 0.005), infinities and NaNs alike.
          const auto same = [](double got, double want) {
            return got == want || (std::isnan(got) && std::isnan(want)) ||
                   std::fabs(got - want) <= 1e-12 * std::fabs(want);
          };
          for (std::size_t c = 0; c < channels; ++c) {
            EXPECT_TRUE(same(s[c], rs[c])) << "sum_dy " << c << ": " << s[c] << " vs " << rs[c];
            EXPECT_TRUE(same(sx[c], rsx[c]))
                << "sum_dy_xmu " << c << ": " << sx[c] << " vs " << rsx[c];
          }
        }
      }
    }
  }
  kernels::simd::force_target("");
}

TEST(GateInterval, SumsAtInfiniteInputsAndZeroScalesMatchTheOracle) {
  std::vector<double> mean, scale, shift;
  for (int i = 0; i < 5; ++i) {
    const double offset = 0.125 * i;
    for (const Channel& ch : {Channel{0.5, 0.0, -1.0}, Channel{0.0, 2.0, 0.0},
                              Channel{-1.0, -1.5, 0.5}, Channel{0.2, 0.0, 0.3}}) {
      mean.push_back(ch.mean + offset), scale.push_back(ch.scale), shift.push_back(ch.shift);
    }
  }
  check_unusual_sums(mean, scale, shift);
  check_unusual_sums({0.5, 0.0, -1.0, 3e38}, {0.0, 2.0, -1.5, 0.0}, {-1.0, 0.0, 0.5, 1.0});
}

}  // namespace
}  // namespace bn1d::test
