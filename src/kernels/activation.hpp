// SPDX-License-Identifier: MIT
// The fused activation as the kernels apply it (bn1d/activation.hpp), one value at a time: the
// oracle of the SIMD kernels and their scalar tails. Every kernel forms the activation's input
// the same way, z = (x − mean) · scale + shift in float64, each operation rounded (no FMA), so
// that the backward's gate agrees bit for bit with the forward's output on every path.
#pragma once

#include <cstdint>

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

  bool enabled() const { return kind != Activation::None; }
};

/// z (float64) rounds to a T value > 0 exactly when z > kActiveAbove<T>: half the smallest
/// positive T (a tie rounds to the even 0). Comparing z with it gives the sign of the stored
/// output without rounding in the backward.
template <class T>
constexpr double kActiveAbove = 0.0;
template <>
inline constexpr double kActiveAbove<float> = 0x1.0p-150;
template <>
inline constexpr double kActiveAbove<BFloat16> = 0x1.0p-134;
template <>
inline constexpr double kActiveAbove<Float16> = 0x1.0p-25;

/// The activation's input, as every kernel forms it.
inline double act_input(double x, double mean, double scale, double shift) {
  const double xm = x - mean;
  const double product = xm * scale;
  return product + shift;
}

/// Whether the activation passes z through (its derivative is 1): ReLU where the stored output
/// is not ≤ 0 (a NaN passes, as torch's threshold_backward passes it); LeakyReLU where it is > 0.
template <class T>
inline bool act_passes(Activation kind, double z) {
  return kind == Activation::ReLU ? !(z <= kActiveAbove<T>) : z > kActiveAbove<T>;
}

/// The activation of z, before its one rounding to T.
template <class T>
inline double act_value(const Act& act, double z) {
  if (act_passes<T>(act.kind, z)) return z;
  return act.kind == Activation::ReLU ? 0.0 : z * act.slope;
}

/// dy times the activation's derivative at z.
template <class T>
inline double act_gate(const Act& act, double z, double dy) {
  if (act_passes<T>(act.kind, z)) return dy;
  return act.kind == Activation::ReLU ? 0.0 : dy * act.slope;
}

}  // namespace bn1d::kernels
