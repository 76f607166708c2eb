// SPDX-License-Identifier: MIT
// The 16-bit element types: exact widening, one rounding from double (exhaustively where cheap,
// and at hand-derived ties, subnormals, overflow thresholds and double-rounding traps).
#include <gtest/gtest.h>

#include <bit>
#include <bn1d/half.hpp>
#include <cmath>
#include <cstdint>
#include <limits>

namespace bn1d {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

uint16_t bf16(double v) { return to_bfloat16(v).bits; }
uint16_t f16(double v) { return to_float16(v).bits; }
double of_bf16(uint16_t bits) { return to_double(BFloat16{bits}); }
double of_f16(uint16_t bits) { return to_double(Float16{bits}); }

// The NaN codes of a format: exponent all ones and a mantissa other than 0.
bool is_nan_code(uint16_t bits, uint16_t inf) {
  return (bits & inf) == inf && (bits & ~inf & 0x7FFF);
}

TEST(BFloat16, WidensAsTheTopHalfOfAFloat32) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float oracle = std::bit_cast<float>(b << 16);
    const double got = of_bf16(static_cast<uint16_t>(b));
    if (std::isnan(oracle)) {
      ASSERT_TRUE(std::isnan(got)) << b;
      ASSERT_EQ(std::signbit(got), std::signbit(oracle)) << b;
    } else {
      ASSERT_EQ(std::bit_cast<uint64_t>(got), std::bit_cast<uint64_t>(double{oracle})) << b;
    }
  }
}

// Every code widens and narrows back to itself; a NaN stays a NaN of its sign and payload (and
// becomes quiet).
template <class Narrow, class Widen>
void expect_round_trips(Narrow narrow, Widen widen, uint16_t inf, uint16_t quiet) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const auto bits = static_cast<uint16_t>(b);
    const double d = widen(bits);
    if (is_nan_code(bits, inf)) {
      ASSERT_TRUE(std::isnan(d)) << b;
      ASSERT_EQ(narrow(d), bits | quiet) << b;
    } else {
      ASSERT_FALSE(std::isnan(d)) << b;
      ASSERT_EQ(narrow(d), bits) << b;
      ASSERT_EQ(std::signbit(d), (bits & 0x8000) != 0) << b;
    }
  }
}

TEST(BFloat16, EveryCodeRoundTrips) { expect_round_trips(bf16, of_bf16, 0x7F80, 0x0040); }
TEST(Float16, EveryCodeRoundTrips) { expect_round_trips(f16, of_f16, 0x7C00, 0x0200); }

// Between every two neighbouring finite positive codes (and their negatives): the midpoint rounds
// to the even code, the doubles next to it to the nearer code.
template <class Narrow, class Widen>
void expect_nearest_even(Narrow narrow, Widen widen, uint16_t max_finite) {
  for (uint32_t b = 0; b < max_finite; ++b) {
    const double lo = widen(static_cast<uint16_t>(b)), hi = widen(static_cast<uint16_t>(b + 1));
    ASSERT_LT(lo, hi) << b;
    const double mid = lo + (hi - lo) / 2;  // exact: both are far from double's limits
    const uint32_t even = (b % 2 == 0) ? b : b + 1;
    ASSERT_EQ(narrow(mid), even) << b;
    ASSERT_EQ(narrow(std::nextafter(mid, 0.0)), b) << b;
    ASSERT_EQ(narrow(std::nextafter(mid, kInf)), b + 1) << b;
    ASSERT_EQ(narrow(-mid), even | 0x8000) << b;
    ASSERT_EQ(narrow(-std::nextafter(mid, kInf)), (b + 1) | 0x8000) << b;
  }
}

TEST(BFloat16, RoundsToNearestEvenBetweenEveryPair) { expect_nearest_even(bf16, of_bf16, 0x7F7F); }
TEST(Float16, RoundsToNearestEvenBetweenEveryPair) { expect_nearest_even(f16, of_f16, 0x7BFF); }

TEST(Float16, HandDecodedValues) {
  EXPECT_EQ(of_f16(0x3C00), 1.0);
  EXPECT_EQ(of_f16(0xC000), -2.0);
  EXPECT_EQ(of_f16(0x3555), 1365.0 / 4096);  // (1 + 341/1024) / 4
  EXPECT_EQ(of_f16(0x7BFF), 65504.0);
  EXPECT_EQ(of_f16(0x0001), std::ldexp(1.0, -24));         // smallest subnormal
  EXPECT_EQ(of_f16(0x03FF), 1023 * std::ldexp(1.0, -24));  // largest subnormal
  EXPECT_EQ(of_f16(0x0400), std::ldexp(1.0, -14));         // smallest normal
  EXPECT_EQ(of_f16(0x7C00), kInf);
  EXPECT_EQ(of_f16(0xFC00), -kInf);
  EXPECT_TRUE(std::signbit(of_f16(0x8000)) && of_f16(0x8000) == 0);
}

TEST(Float16, HandDerivedRoundings) {
  EXPECT_EQ(f16(1.0 / 3), 0x3555);                       // 1365.33/4096
  EXPECT_EQ(f16(1 + std::ldexp(1.0, -11)), 0x3C00);      // tie, down to even
  EXPECT_EQ(f16(1 + 3 * std::ldexp(1.0, -11)), 0x3C02);  // tie, up to even
  // Overflow: 65520 is the tie between 65504 (odd mantissa) and 2^16, so it rounds to inf.
  EXPECT_EQ(f16(65504.0), 0x7BFF);
  EXPECT_EQ(f16(65519.99), 0x7BFF);
  EXPECT_EQ(f16(std::nextafter(65520.0, 0.0)), 0x7BFF);
  EXPECT_EQ(f16(65520.0), 0x7C00);
  EXPECT_EQ(f16(-65520.0), 0xFC00);
  EXPECT_EQ(f16(1e300), 0x7C00);
  EXPECT_EQ(f16(kInf), 0x7C00);
  EXPECT_EQ(f16(-kInf), 0xFC00);
  // Subnormals: 2^-25 ties between 0 and the smallest subnormal; 3·2^-25 between 1 and 2 units.
  EXPECT_EQ(f16(std::ldexp(1.0, -25)), 0x0000);
  EXPECT_EQ(f16(std::ldexp(1.0, -25) + std::ldexp(1.0, -60)), 0x0001);
  EXPECT_EQ(f16(3 * std::ldexp(1.0, -25)), 0x0002);
  EXPECT_EQ(f16(-std::ldexp(1.0, -26)), 0x8000);
  EXPECT_EQ(f16(std::numeric_limits<double>::denorm_min()), 0x0000);
  EXPECT_EQ(f16(1023.5 * std::ldexp(1.0, -24)), 0x0400);  // largest subnormal + ½ → normal
  EXPECT_EQ(f16(-0.0), 0x8000);
}

TEST(BFloat16, HandDerivedRoundings) {
  EXPECT_EQ(bf16(1.0), 0x3F80);
  EXPECT_EQ(bf16(1.0 / 3), 0x3EAB);  // 170.67/512 → 171/512
  EXPECT_EQ(of_bf16(0x3EAB), 171.0 / 512);
  EXPECT_EQ(bf16(1 + std::ldexp(1.0, -8)), 0x3F80);      // tie, down to even
  EXPECT_EQ(bf16(1 + 3 * std::ldexp(1.0, -8)), 0x3F82);  // tie, up to even
  // Largest finite (2 − 2^-7)·2^127; the tie with 2^128 rounds to inf.
  const double max_finite = std::ldexp(2 - std::ldexp(1.0, -7), 127);
  const double tie = std::ldexp(2 - std::ldexp(1.0, -8), 127);
  EXPECT_EQ(of_bf16(0x7F7F), max_finite);
  EXPECT_EQ(bf16(max_finite), 0x7F7F);
  EXPECT_EQ(bf16(std::nextafter(tie, 0.0)), 0x7F7F);
  EXPECT_EQ(bf16(tie), 0x7F80);
  EXPECT_EQ(bf16(-tie), 0xFF80);
  EXPECT_EQ(bf16(1e300), 0x7F80);
  // Subnormals: 2^-133 is the smallest; 2^-134 ties to 0.
  EXPECT_EQ(of_bf16(0x0001), std::ldexp(1.0, -133));
  EXPECT_EQ(bf16(std::ldexp(1.0, -134)), 0x0000);
  EXPECT_EQ(bf16(std::ldexp(1.0, -134) + std::ldexp(1.0, -170)), 0x0001);
  EXPECT_EQ(bf16(3 * std::ldexp(1.0, -134)), 0x0002);
  EXPECT_EQ(bf16(std::ldexp(1.0, -126)), 0x0080);  // smallest normal
}

// Doubles just above a 16-bit tie whose float32 rounding lands exactly on the tie: narrowing
// through float would then round to even, the wrong way.
TEST(BFloat16, RoundsOnceNotThroughFloat) {
  const double above_tie = 1 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30);
  ASSERT_EQ(static_cast<float>(above_tie), 1 + std::ldexp(1.0f, -8));  // the trap is real
  EXPECT_EQ(bf16(above_tie), 0x3F81);                                  // 1 + 2^-7, not 1
  EXPECT_EQ(bf16(-above_tie), 0xBF81);
}

TEST(Float16, RoundsOnceNotThroughFloat) {
  const double above_tie = 1 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  ASSERT_EQ(static_cast<float>(above_tie), 1 + std::ldexp(1.0f, -11));
  EXPECT_EQ(f16(above_tie), 0x3C01);  // 1 + 2^-10, not 1
  // The same in the subnormal range: 2^-25 + 2^-60 is 2^-25 as a float, a tie for float16.
  const double tiny = std::ldexp(1.0, -25) + std::ldexp(1.0, -60);
  ASSERT_EQ(static_cast<float>(tiny), std::ldexp(1.0f, -25));
  EXPECT_EQ(f16(tiny), 0x0001);
}

TEST(Half, NaNStaysNaN) {
  for (const double nan : {kNaN, -kNaN, std::bit_cast<double>(uint64_t{0x7FF0000000000001})}) {
    EXPECT_TRUE(is_nan_code(bf16(nan), 0x7F80)) << bf16(nan);
    EXPECT_TRUE(is_nan_code(f16(nan), 0x7C00)) << f16(nan);
    EXPECT_EQ((bf16(nan) & 0x8000) != 0, std::signbit(nan));
    EXPECT_EQ((f16(nan) & 0x8000) != 0, std::signbit(nan));
    EXPECT_TRUE(std::isnan(of_bf16(bf16(nan))));
    EXPECT_TRUE(std::isnan(of_f16(f16(nan))));
  }
}

}  // namespace
}  // namespace bn1d
