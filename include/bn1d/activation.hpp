// SPDX-License-Identifier: MIT
/// @file activation.hpp
/// @brief The activation fused into batch normalization's output pass.
///
/// With an activation, the forward writes act(bn(x)) in the pass that normalizes, and the
/// backward gates grad_output by the activation's derivative in the passes that read it, with no
/// saved mask: it recomputes the activation's input z = (x − mean) · invstd · weight + bias from
/// x (in float32 for float32 inputs, else float64; a product, then a sum, each rounded: the same
/// bits in every kernel and on every CPU), so the gate agrees with the output written
/// (docs/math.md#fused-activation). The derivative follows torch: ReLU's gradient is dy where the
/// output is > 0 and 0 elsewhere (0 at 0, torch's threshold_backward; NaN passes);
/// LeakyReLU's is dy where bn(x) > 0, else negative_slope · dy. For 16-bit inputs z is rounded
/// once to the output, so LeakyReLU with |negative_slope| > 1 may give a tiny nonzero output
/// where torch, rounding bn(x) to 0 first, gives 0.
#pragma once

#include <string>

namespace bn1d {

/// The activation applied to batch normalization's output.
enum class Activation {
  None,       ///< y = bn(x)
  ReLU,       ///< y = max(bn(x), 0)
  LeakyReLU,  ///< y = bn(x) where bn(x) > 0, else negative_slope · bn(x)
};

/// An activation and its parameter, as the functional API and the modules take it.
struct FusedActivation {
  Activation kind = Activation::None;  ///< which activation
  double negative_slope = 0.01;        ///< LeakyReLU's slope for bn(x) ≤ 0 (finite); else unused

  /// Whether an activation is applied.
  bool enabled() const noexcept { return kind != Activation::None; }
};

/// "none", "relu" or "leaky_relu".
std::string activation_name(Activation kind);

}  // namespace bn1d
