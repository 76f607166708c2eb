// SPDX-License-Identifier: MIT
// The fused activation as the kernels apply it (bn1d/activation.hpp), one value at a time: the
// oracle of the SIMD kernels and their scalar tails. Every kernel forms the activation's input z
// the same way, in the compute type of the storage type T (float32 for float32, else float64)
//   z = ((x − mean_hi) − mean_lo) · scale + shift,   each operation rounded (no FMA),
// with the float64 mean split in two compute values, so that the backward's gate agrees bit for
// bit with the forward's output on every path, target and thread count.
#pragma once

#include <cstdint>
#include <type_traits>

#include "bn1d/activation.hpp"
#include "kernels/element.hpp"

namespace bn1d::kernels {

/// The activation of a kernel call. The backward kernels also take z's parameters: scale and
/// shift ({C} float64, as normalize got them).
struct Act {
  Activation kind = Activation::None;
  double slope = 0.0;             ///< LeakyReLU's negative slope
  const double* scale = nullptr;  ///< backward: z's scale (weight · invstd)
  const double* shift = nullptr;  ///< backward: z's shift (bias, or zeros)
  /// The SIMD gradient sums: each channel's GateTest (gate_interval.hpp), {C} values each,
  /// written once per call by the schedule.
  const uint64_t* gate_keep = nullptr;
  const uint64_t* gate_flip = nullptr;
  const double* gate_max = nullptr;

  bool enabled() const { return kind != Activation::None; }
};

/// The type z is formed in: float32 for float32 storage, float64 for the others.
template <class T>
using ActCompute = std::conditional_t<std::is_same_v<T, float>, float, double>;

/// A z in ActCompute<T> rounds to a T value > 0 exactly when it is > kActiveAbove<T>: 0 where z
/// is stored as it is; for the 16-bit types half their smallest positive value (a tie rounds to
/// the even 0). The backward compares z with it instead of rounding.
template <class T>
constexpr double kActiveAbove = 0.0;
template <>
inline constexpr double kActiveAbove<BFloat16> = 0x1.0p-134;
template <>
inline constexpr double kActiveAbove<Float16> = 0x1.0p-25;

/// Channel c's parameters of z and the slope, in ActCompute<T>: mean_hi = mean rounded,
/// mean_lo = the rest rounded (0 in float64); scale, shift and slope rounded.
template <class T>
struct ActChannel {
  using CT = ActCompute<T>;
  CT mean_hi, mean_lo, scale, shift, slope;

  static ActChannel of(double mean, double scale, double shift, double slope) {
    const auto hi = static_cast<CT>(mean);
    return {hi, static_cast<CT>(mean - static_cast<double>(hi)), static_cast<CT>(scale),
            static_cast<CT>(shift), static_cast<CT>(slope)};
  }
  /// z of a stored value x (widened exactly).
  CT input(CT x) const {
    const CT xm = (x - mean_hi) - mean_lo;
    const CT product = xm * scale;
    return product + shift;
  }
};

/// Whether the activation passes z through (its derivative is 1): ReLU where the stored output
/// is not ≤ 0 (a NaN passes, as torch's threshold_backward passes it); LeakyReLU where it is > 0.
template <class T, class CT>
inline bool act_passes(Activation kind, CT z) {
  const auto above = static_cast<CT>(kActiveAbove<T>);
  return kind == Activation::ReLU ? !(z <= above) : z > above;
}

/// The activation of z, before its rounding to T: z, or 0 (ReLU), or z · slope (LeakyReLU).
template <class T, class CT>
inline CT act_value(Activation kind, CT z, CT slope) {
  if (act_passes<T>(kind, z)) return z;
  return kind == Activation::ReLU ? CT{0} : z * slope;
}

/// dy times the activation's derivative where it passes z (@p passes) or not: dy, or 0 (ReLU),
/// or dy · slope (LeakyReLU).
template <class CT>
inline CT gate_dy(Activation kind, bool passes, CT dy, CT slope) {
  if (passes) return dy;
  return kind == Activation::ReLU ? CT{0} : dy * slope;
}

/// dy (exact in CT) times the activation's derivative at z.
template <class T, class CT>
inline CT act_gate(Activation kind, CT z, CT dy, CT slope) {
  return gate_dy(kind, act_passes<T>(kind, z), dy, slope);
}

}  // namespace bn1d::kernels
