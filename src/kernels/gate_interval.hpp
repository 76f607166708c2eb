// SPDX-License-Identifier: MIT
// The fused activation's gate of the gradient sums, as an interval of stored inputs tested with
// one comparison. The backward gates dy at z(x) = ActChannel::input(x) (activation.hpp); with a
// channel's z parameters finite, z is monotone in x (non-decreasing for scale > 0,
// non-increasing for scale < 0, constant for scale = 0 except where x − mean is ±inf — x = ±inf,
// or an overflow — which gives NaN), so the non-NaN inputs that ReLU blocks (z ≤ kActiveAbove) and
// those that LeakyReLU passes (z > kActiveAbove) each form an interval [lo, hi] of x. The kernels
// compare x with it instead of forming z: act_gate's bits in two operations instead of six
// (docs/math.md#fused-activation, "The gate as an interval of x").
#pragma once

#include <bit>
#include <cstdint>

#include "bn1d/tensor.hpp"
#include "kernels/activation.hpp"

namespace bn1d::kernels {

/// One channel's inputs on which the gate acts: those that ReLU blocks (its gradient there is 0),
/// or those that LeakyReLU passes (dy itself); lo > hi when there are none.
struct GateInterval {
  double lo, hi;
};

/// The interval of the inputs of @p dtype for the channel ActChannel::of(mean, scale, shift)
/// forms z for, found by searching the dtype's values in order (z formed by ActChannel::input
/// itself). False when the channel's z parameters are not all finite in ActCompute.
bool gate_interval(DType dtype, Activation kind, double mean, double scale, double shift,
                   GateInterval& interval);

/// An interval as one comparison: x (widened to float64) is in it exactly when the float64 of
/// bits (bits of x AND keep) XOR flip is ≤ max (never for NaN): x itself for [−inf, hi], −x for
/// [lo, +inf], |x| for [−hi, hi] and for the empty interval (max = −inf).
struct GateTest {
  uint64_t keep, flip;
  double max;

  bool holds(double x) const {
    return std::bit_cast<double>((std::bit_cast<uint64_t>(x) & keep) ^ flip) <= max;
  }
};

/// @p interval as a GateTest; false for an interval of none of those forms (finite at both ends
/// and not symmetric about 0).
bool gate_test(GateInterval interval, GateTest& test);

/// The tests of channels 0 … C − 1 (mean[c], scale[c], shift[c]) into keep[c], flip[c], max[c];
/// false, with them partly written, when a channel has no GateTest (the caller gates by z).
bool gate_tests(DType dtype, Activation kind, const double* mean, const double* scale,
                const double* shift, int64_t C, uint64_t* keep, uint64_t* flip, double* max);

/// dy (exact in float64) gated at an input for which the channel's test gives @p in: act_gate's
/// bits (a NaN input is in no interval: it passes ReLU and takes LeakyReLU's slope, as its NaN z).
template <class T>
double gate_by_test(Activation kind, bool in, double dy, ActCompute<T> slope) {
  const bool passes = (kind == Activation::ReLU) != in;  // ReLU's interval is what it blocks
  return static_cast<double>(gate_dy(kind, passes, static_cast<ActCompute<T>>(dy), slope));
}

}  // namespace bn1d::kernels
