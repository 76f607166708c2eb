// SPDX-License-Identifier: MIT
/// @file batch_norm.hpp
/// @brief Functional batch normalization over (N, C) and (N, C, L) inputs, and its separable steps.
///
/// Conventions used throughout:
/// - Statistics are per channel c over the n = N·L values x[:, c, :].
/// - Normalization uses the **biased** batch variance M2 / n. The running variance is updated with
///   the **unbiased** variance M2 / (n − 1).
/// - Momentum follows PyTorch: running = (1 − momentum) · running + momentum · observed.
///   (The module turns momentum = nullopt into 1 / num_batches_tracked, a cumulative average.)
/// - invstd = 1 / sqrt(var + eps), except that var + eps == 0 gives invstd = 0 so that a constant
///   channel with eps = 0 normalizes to 0 (as PyTorch does), never NaN.
/// - Inputs may have any strides; outputs are new contiguous tensors of the input's shape.
///   Statistics (mean, M2, invstd, gradient sums) are float64 tensors of shape {C}, accumulated
///   in float64 for every input dtype (float32, float64, bfloat16, float16); the steps that take
///   them require them contiguous.
/// - Parameters and running statistics have the input's dtype or, for a bfloat16/float16 input,
///   float32 or float64 (mixed precision), all of one dtype. Outputs have the input's dtype and
///   are rounded once from float64 (16-bit inputs: docs/math.md#16-bit-inputs).
///
/// Distributed training inserts a reduction between the steps:
/// - forward: batch_stats → combine_stats (across ranks) → normalization_from_batch →
///   batch_norm_apply;
/// - backward: backward_stats → combine_grad_stats (across ranks) → batch_norm_backward_input
///   (with the combined sums) and batch_norm_backward_params (with the local ones).
/// BatchNorm1d::forward and backward take a StatsCombiner (combine.hpp) that does exactly this.
#pragma once

#include <cstdint>
#include <span>

#include "bn1d/activation.hpp"
#include "bn1d/tensor.hpp"
#include "bn1d/valid_positions.hpp"

namespace bn1d {

/// Per-channel partial statistics of a batch: count, mean and M2 = Σ (x − mean)².
struct BatchStats {
  int64_t count = 0;  ///< values per channel, N·L
  Tensor mean;        ///< float64 {C}
  Tensor m2;          ///< float64 {C}, sum of squared deviations from mean
};

/// Per-channel sums needed by the backward pass, over the same n = N·L values per channel.
struct GradStats {
  int64_t count = 0;  ///< values per channel, N·L
  Tensor sum_dy;      ///< float64 {C}: Σ dy
  Tensor sum_dy_xmu;  ///< float64 {C}: Σ dy · (x − mean)
};

/// Mean and inverse standard deviation used to normalize each channel.
struct Normalization {
  Tensor mean;    ///< float64 {C}
  Tensor invstd;  ///< float64 {C}: 1 / sqrt(var + eps) (0 when var + eps == 0)
};

/// Gradients of a batch-norm call. Undefined tensors where the gradient does not exist
/// (weight and bias without affine parameters).
struct BatchNormGradients {
  Tensor input;   ///< same shape and dtype as the input, contiguous
  Tensor weight;  ///< {C}, the parameters' dtype
  Tensor bias;    ///< {C}, the parameters' dtype
};

/// Step 1 of the forward pass: per-channel count, mean and M2 of @p input ((N, C) or (N, C, L),
/// any floating dtype, any strides). An empty batch gives count 0, mean 0 and M2 0.
BatchStats batch_stats(const Tensor& input);

/// Step 2: merges partial statistics of disjoint batches with Chan's parallel formula, in the
/// order given (deterministic). Parts with count 0 contribute nothing. All parts must have the
/// same channel count, and their counts must sum within the int64 range.
BatchStats combine_stats(std::span<const BatchStats> parts);

/// Normalization with the biased variance of @p stats: invstd = 1 / sqrt(M2 / count + eps).
/// Throws Error if count is 0 or an M2 is negative or NaN (naming the channel).
Normalization normalization_from_batch(const BatchStats& stats, double eps);

/// Normalization with running statistics (evaluation mode): invstd = 1 / sqrt(running_var + eps).
/// Throws Error if running_var + eps is negative or NaN in any channel (naming the first).
Normalization normalization_from_running(const Tensor& running_mean, const Tensor& running_var,
                                         double eps);

/// Updates running statistics in place with the **unbiased** variance M2 / (count − 1):
/// running = (1 − momentum) · running + momentum · observed. Requires count > 1.
void update_running_stats(const Tensor& running_mean, const Tensor& running_var,
                          const BatchStats& stats, double momentum);

/// Step 3: y = act((x − mean) · invstd · weight + bias) per channel (act: @p activation, none
/// by default). @p weight and @p bias may be undefined (treated as 1 and 0). Returns a new
/// contiguous tensor of the input's shape.
Tensor batch_norm_apply(const Tensor& input, const Normalization& norm, const Tensor& weight,
                        const Tensor& bias, const FusedActivation& activation = {});

/// torch.nn.functional.batch_norm. With @p training, normalizes with batch statistics and, when
/// running_mean/running_var are defined, updates them in place with @p momentum (unbiased
/// variance). Without @p training, normalizes with the running statistics, which must be defined.
/// Throws Error for N·L == 1 in training mode. An empty batch (no elements) returns an empty
/// output and leaves the running statistics unchanged.
/// With @p activation, returns act(batch_norm(...)) computed in the same pass.
Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum = 0.1,
                  double eps = 1e-5, const FusedActivation& activation = {});

/// Step 1 of the backward pass: per-channel Σ dy and Σ dy · (x − mean), with mean = norm.mean.
/// @p grad_output must have the input's shape and dtype (any strides).
GradStats backward_stats(const Tensor& grad_output, const Tensor& input, const Normalization& norm);
/// backward_stats() of an output with a fused @p activation: the sums of dy' = dy · act'(z), with
/// z = (x − mean) · invstd · weight + bias recomputed from the input (@p weight and @p bias as
/// the forward had them, undefined for 1 and 0).
GradStats backward_stats(const Tensor& grad_output, const Tensor& input, const Normalization& norm,
                         const Tensor& weight, const Tensor& bias,
                         const FusedActivation& activation);

/// Step 2: sums partial gradient statistics of disjoint batches, in the order given. Their
/// counts must sum within the int64 range.
GradStats combine_grad_stats(std::span<const GradStats> parts);

/// Step 3, input gradient. With @p batch_statistics (the forward normalized with statistics of
/// the batch described by @p global, e.g. the combined global batch) the mean and variance
/// depend on x:
///   dx = w·invstd · (dy − Σdy / n − (x − mean) · invstd² · Σdy(x − mean) / n),   n = global.count.
/// Without it (running statistics were constants): dx = w · invstd · dy.
/// @p weight may be undefined (treated as 1). Returns a new contiguous tensor of the input's shape.
Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const GradStats& global, bool batch_statistics);
/// batch_norm_backward_input() of an output with a fused @p activation: dy' = dy · act'(z) in
/// place of dy (z as in backward_stats; @p global from the gated sums).
Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const Tensor& bias, const GradStats& global, bool batch_statistics,
                                 const FusedActivation& activation);

/// Parameter gradients from (local) gradient statistics, in @p dtype:
///   grad_weight = Σ dy · (x − mean) · invstd,   grad_bias = Σ dy.
BatchNormGradients batch_norm_backward_params(const GradStats& stats, const Normalization& norm,
                                              DType dtype);

/// The whole backward pass of one batch_norm call: the three steps above without a
/// reduction. @p batch_statistics says whether the forward used batch statistics (training, or
/// no running statistics). Weight and bias gradients are computed only when @p affine.
BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       bool batch_statistics, bool affine);
/// batch_norm_backward() of an output with a fused @p activation (the three steps above with
/// @p bias and @p activation).
BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       const Tensor& bias, bool batch_statistics, bool affine,
                                       const FusedActivation& activation);

// ---- Masked batch norm
// --------------------------------------------------------------------------- The steps over the
// valid positions of an (N, C, L) input only (valid_positions.hpp): the statistics and sums are
// those of the valid values (count = valid.count()), and the outputs and input gradients are 0 at
// the padding. Each throws Error when @p valid does not fit the input (ValidPositions::check_fits).

/// batch_stats() over the valid positions.
BatchStats batch_stats(const Tensor& input, const ValidPositions& valid);
/// batch_norm_apply() at the valid positions, 0 elsewhere.
Tensor batch_norm_apply(const Tensor& input, const Normalization& norm, const Tensor& weight,
                        const Tensor& bias, const ValidPositions& valid,
                        const FusedActivation& activation = {});
/// batch_norm() over the valid positions: torch.nn.functional.batch_norm of the packed valid
/// values, 0 at the padding. In training, a batch without valid values is an Error.
Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps, const ValidPositions& valid, const FusedActivation& activation = {});
/// backward_stats() over the valid positions.
GradStats backward_stats(const Tensor& grad_output, const Tensor& input, const Normalization& norm,
                         const ValidPositions& valid);
/// backward_stats() with a fused activation over the valid positions.
GradStats backward_stats(const Tensor& grad_output, const Tensor& input, const Normalization& norm,
                         const Tensor& weight, const Tensor& bias,
                         const FusedActivation& activation, const ValidPositions& valid);
/// batch_norm_backward_input() at the valid positions, 0 elsewhere (n = global.count).
Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const GradStats& global, bool batch_statistics,
                                 const ValidPositions& valid);
/// batch_norm_backward_input() with a fused activation at the valid positions, 0 elsewhere.
Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const Tensor& bias, const GradStats& global, bool batch_statistics,
                                 const FusedActivation& activation, const ValidPositions& valid);
/// batch_norm_backward() over the valid positions.
BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       bool batch_statistics, bool affine,
                                       const ValidPositions& valid);
/// batch_norm_backward() with a fused activation over the valid positions.
BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       const Tensor& bias, bool batch_statistics, bool affine,
                                       const FusedActivation& activation,
                                       const ValidPositions& valid);

// ---- Allocation-free forms --------------------------------------------------------------------
// The same steps writing into caller-owned results (outputs first). A result tensor is reused
// when it has the right sizes and dtype, overlaps no input of the call (input, grad_output,
// weight, bias, running statistics, norm, stats — any tensor the call reads) and no other result
// of the call, and is contiguous (an output or grad_input may instead have exactly the input's
// strides when the input is dense, e.g. channels-last); otherwise it is replaced by a new
// contiguous one before anything is written, so aliasing a result with an input gives the same
// values and leaves the input unchanged. With reused results a call allocates nothing.

/// batch_stats() into @p stats.
void batch_stats(BatchStats& stats, const Tensor& input);
/// normalization_from_batch() into @p norm.
void normalization_from_batch(Normalization& norm, const BatchStats& stats, double eps);
/// normalization_from_running() into @p norm (unchanged when it throws).
void normalization_from_running(Normalization& norm, const Tensor& running_mean,
                                const Tensor& running_var, double eps);
/// batch_norm_apply() into @p output.
void batch_norm_apply(Tensor& output, const Tensor& input, const Normalization& norm,
                      const Tensor& weight, const Tensor& bias,
                      const FusedActivation& activation = {});
/// backward_stats() into @p stats.
void backward_stats(GradStats& stats, const Tensor& grad_output, const Tensor& input,
                    const Normalization& norm);
/// backward_stats() with a fused activation into @p stats.
void backward_stats(GradStats& stats, const Tensor& grad_output, const Tensor& input,
                    const Normalization& norm, const Tensor& weight, const Tensor& bias,
                    const FusedActivation& activation);
/// batch_norm_backward_input() into @p grad_input.
void batch_norm_backward_input(Tensor& grad_input, const Tensor& grad_output, const Tensor& input,
                               const Normalization& norm, const Tensor& weight,
                               const GradStats& global, bool batch_statistics);
/// batch_norm_backward_input() with a fused activation into @p grad_input.
void batch_norm_backward_input(Tensor& grad_input, const Tensor& grad_output, const Tensor& input,
                               const Normalization& norm, const Tensor& weight, const Tensor& bias,
                               const GradStats& global, bool batch_statistics,
                               const FusedActivation& activation);
/// batch_norm_backward_params() into grads.weight and grads.bias (grads.input is untouched).
void batch_norm_backward_params(BatchNormGradients& grads, const GradStats& stats,
                                const Normalization& norm, DType dtype);
/// batch_norm_backward() into @p grads (weight and bias reset to undefined without @p affine).
void batch_norm_backward(BatchNormGradients& grads, const Tensor& grad_output, const Tensor& input,
                         const Normalization& norm, const Tensor& weight, bool batch_statistics,
                         bool affine);
/// batch_norm_backward() with a fused activation into @p grads.
void batch_norm_backward(BatchNormGradients& grads, const Tensor& grad_output, const Tensor& input,
                         const Normalization& norm, const Tensor& weight, const Tensor& bias,
                         bool batch_statistics, bool affine, const FusedActivation& activation);

}  // namespace bn1d
