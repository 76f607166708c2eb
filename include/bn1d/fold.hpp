// SPDX-License-Identifier: MIT
/// @file fold.hpp
/// @brief Folding an eval-mode BatchNorm1d into the adjacent Linear or Conv1d for inference.
///
/// With σ = sqrt(running_var + eps), γ the weight (1 without affine) and β the bias (0 without
/// affine), an eval-mode BatchNorm1d is the per-channel affine map x ↦ γ(x − μ)/σ + β, which a
/// neighbouring Linear absorbs (derivation: docs/math.md#folding-into-a-linear):
/// - after a Linear or Conv1d: bn(W x + b) = W' x + b' with W' = diag(γ/σ)·W, b' = γ(b − μ)/σ + β;
/// - before a Linear over its C input features: W bn(x) + b = W' x + b' with W' = W·diag(γ/σ),
///   b' = b + W(β − γμ/σ).
/// Everything is computed in float64 from the exact values of the inputs, and each result element
/// is rounded once to the weight's dtype. A channel with running_var + eps == 0 gets the scale
/// γ/σ = 0, as BatchNorm1d itself normalizes it (its output is β).
#pragma once

#include "bn1d/module.hpp"
#include "bn1d/tensor.hpp"

namespace bn1d {

/// The weight and bias of a Linear or Conv1d with a BatchNorm1d folded in: new contiguous
/// tensors of the given weight's dtype.
struct FoldedLinear {
  Tensor weight;  ///< the given weight's shape
  Tensor bias;    ///< {out features}, always defined
};

/// Folds @p bn into the layer before it: y = bn(W x + b) for a Linear (@p weight {C, in}) or a
/// Conv1d (@p weight {C, in, k}, every [c, :, :] scaled), with C = bn's num_features.
///
/// @p weight and @p bias have one floating dtype (float32, float64, bfloat16 or float16) and any
/// strides; @p bias {C} may be undefined (a layer without bias: 0). @p bn's dtype may differ from
/// the weight's. Throws Error, naming the argument, the expected and the actual value, for a bn
/// in training mode, without running statistics (track_running_stats false), with a fused
/// activation (not an affine map) or moved from; a
/// weight or bias whose shape does not fit C; dtypes that differ or are not floating; and a
/// running_var + eps that is negative or NaN. Nothing is returned half-done.
FoldedLinear fold_into_preceding(const BatchNorm1d& bn, const Tensor& weight, const Tensor& bias);

/// Folds @p bn into the Linear after it: y = W bn(x) + b for @p weight {out, C} acting on bn's C
/// features; @p bias {out} may be undefined (0). The bias b' = b + W(β − γμ/σ) takes one float64
/// dot product per output. A Conv1d after bn is refused: its zero padding is not normalized, so
/// no weight and bias reproduce it. Throws Error as fold_into_preceding() does.
FoldedLinear fold_into_following(const BatchNorm1d& bn, const Tensor& weight, const Tensor& bias);

}  // namespace bn1d
