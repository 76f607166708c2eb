// SPDX-License-Identifier: MIT
/// @file half.hpp
/// @brief The 16-bit floating element types (bfloat16, IEEE float16) and their exact conversions.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace bn1d {

/// One bfloat16 value, as its bits (sign, 8 exponent bits, 7 mantissa bits: the top half of a
/// float32). The element type of DType::BFloat16 tensors.
struct BFloat16 {
  uint16_t bits;
};

/// One IEEE 754 binary16 value, as its bits (sign, 5 exponent bits, 10 mantissa bits). The
/// element type of DType::Float16 tensors.
struct Float16 {
  uint16_t bits;
};

namespace detail {

/// A binary floating format of @p kExpBits exponent and @p kMantBits mantissa bits (IEEE layout,
/// at most 16 bits).
template <int kExpBits, int kMantBits>
struct Small {
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  static constexpr int kMinExp = 1 - kBias;  // exponent of the smallest normal
  static constexpr uint32_t kExpMask = (1u << kExpBits) - 1;
  static constexpr uint16_t kInf = static_cast<uint16_t>(kExpMask << kMantBits);
  static constexpr uint16_t kQuiet = static_cast<uint16_t>(1u << (kMantBits - 1));

  // Exact: every value of the format is a double. A NaN keeps its sign and payload.
  static double to_double(uint16_t bits) {
    const bool negative = (bits >> 15) != 0;
    const uint32_t exp = (bits >> kMantBits) & kExpMask;
    const uint64_t mant = bits & ((1u << kMantBits) - 1);
    const uint64_t sign = negative ? 0x8000000000000000ull : 0;
    if (exp == kExpMask && mant != 0) {
      return std::bit_cast<double>(sign | 0x7ff8000000000000ull | (mant << (52 - kMantBits)));
    } else if (exp == kExpMask) {
      return negative ? -INFINITY : INFINITY;
    } else if (exp == 0) {  // subnormal: mant quanta of 2^(kMinExp − kMantBits), a power of 2
      const double quantum = std::bit_cast<double>(uint64_t{1023 + kMinExp - kMantBits} << 52);
      const double a = static_cast<double>(mant) * quantum;
      return negative ? -a : a;
    }
    // Normal: the same sign, exponent and mantissa bits in float64's fields.
    const uint64_t field = static_cast<uint64_t>(static_cast<int>(exp) - kBias + 1023) << 52;
    return std::bit_cast<double>(sign | field | (mant << (52 - kMantBits)));
  }

  // Rounds @p value once to nearest, ties to even; beyond the largest finite value (after
  // rounding) to ±inf. A NaN becomes a quiet NaN with its sign and the top payload bits.
  static uint16_t from_double(double value) {
    const uint64_t d = std::bit_cast<uint64_t>(value);
    const auto sign = static_cast<uint16_t>((d >> 48) & 0x8000u);
    if (std::isnan(value)) {
      return static_cast<uint16_t>(sign | kInf | kQuiet | ((d >> (52 - kMantBits)) & (kQuiet - 1)));
    }
    const double a = std::fabs(value);
    if (a >= std::ldexp(1.0, static_cast<int>(kExpMask) - kBias)) return sign | kInf;
    const int e = static_cast<int>((d >> 52) & 0x7ff) - 1023;  // a's binade is 2^e (a normal)
    if (e < kMinExp - kMantBits - 1) return sign;  // below half the smallest subnormal (or 0)
    const int binade = std::max(e, kMinExp);
    // a = m · 2^(e − 52) in units of the binade's quantum 2^(binade − kMantBits): the integer
    // part n = m >> shift and the remainder, compared with half a unit (integers: exact).
    const uint64_t m = (d & ((uint64_t{1} << 52) - 1)) | (uint64_t{1} << 52);
    const int shift = 52 - kMantBits + (binade - e);  // 52 − kMantBits … 53
    const uint64_t rem = m & ((uint64_t{1} << shift) - 1), half = uint64_t{1} << (shift - 1);
    auto n = static_cast<uint32_t>(m >> shift);
    if (rem > half || (rem == half && (n & 1u) != 0)) ++n;
    // The exponent field of the binade below, plus n (which holds the implicit bit): a carry out
    // of the mantissa moves to the next binade, and past the largest one to the infinity code.
    const auto field = static_cast<uint32_t>(binade + kBias - 1) << kMantBits;
    return static_cast<uint16_t>(sign | (field + n));
  }
};

using BFloat16Format = Small<8, 7>;
using Float16Format = Small<5, 10>;

}  // namespace detail

/// The value of @p x as a double (exact).
inline double to_double(BFloat16 x) { return detail::BFloat16Format::to_double(x.bits); }
/// The value of @p x as a double (exact).
inline double to_double(Float16 x) { return detail::Float16Format::to_double(x.bits); }
/// @p value rounded once to the nearest bfloat16 (ties to even; ±inf beyond its range; NaN stays
/// NaN).
inline BFloat16 to_bfloat16(double value) { return {detail::BFloat16Format::from_double(value)}; }
/// @p value rounded once to the nearest float16 (ties to even; ±inf from 65520 on; NaN stays NaN).
inline Float16 to_float16(double value) { return {detail::Float16Format::from_double(value)}; }

}  // namespace bn1d
