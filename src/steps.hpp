// SPDX-License-Identifier: MIT
// The steps of batch norm on validated arguments: the public functional API (batch_norm.cpp,
// batch_norm_backward.cpp) and the modules validate once at their boundary, then call these.
// Callers guarantee: x (and dy) are views of 2-D/3-D float32/float64 tensors with C channels;
// weight and bias are undefined or {C} tensors of the input's dtype; statistics and
// normalizations hold float64 {C} tensors; counts are as each step states; an activation has a
// valid kind and a finite slope (detail::check_activation).
#pragma once

#include <initializer_list>
#include <span>

#include "bn1d/activation.hpp"
#include "bn1d/batch_norm.hpp"
#include "kernels/view.hpp"
#include "partition.hpp"

namespace bn1d::step {

// Every result is reused only when it overlaps none of the call's inputs (and of the tensors in
// @p also, e.g. a module's parameters and buffers, and the results chosen before it); otherwise
// it is replaced before anything is written.
using Also = std::initializer_list<const Tensor*>;

/// Sizes the calling thread's per-channel scratch for @p C channels (and @p groups groups), so that
/// the steps below allocate nothing in it once their results are chosen (a call that runs out of
/// memory then throws before it writes a result).
void reserve_workspace(int64_t C, int64_t groups = 1);

/// Count, mean and M2 of each channel of @p x over group @p g of @p part into @p stats.
void batch_stats(BatchStats& stats, const kernels::View3& x, const detail::Partition& part,
                 int64_t g, Also also = {});
/// batch_stats() of every group of @p part into @p stats[g], the groups on the threads.
void batch_stats(std::span<BatchStats> stats, const kernels::View3& x,
                 const detail::Partition& part);
/// batch_stats() over every value of @p x.
inline void batch_stats(BatchStats& stats, const kernels::View3& x, Also also = {}) {
  batch_stats(stats, x, {}, 0, also);
}

/// Mean and invstd of the biased variance M2 / count (count > 0) into @p norm.
void normalization_from_batch(Normalization& norm, const BatchStats& stats, double eps);

/// Mean and invstd of running statistics ({C}, float32/float64, same dtype) into @p norm.
/// Throws Error naming the channel when running_var + eps < 0 or NaN, before writing anything.
void normalization_from_running(Normalization& norm, const Tensor& running_mean,
                                const Tensor& running_var, double eps);

/// The momentum update of running statistics ({C}, float32/float64) with the unbiased variance
/// of @p stats (count > 1). Cannot throw.
void update_running_stats(const Tensor& running_mean, const Tensor& running_var,
                          const BatchStats& stats, double momentum);

/// y = act((x − mean) · invstd · weight + bias) into @p output (reused under the rule of
/// batch_norm.hpp's allocation-free forms), each group g of @p part with @p norms[g]; 0 outside
/// part.valid. Normalizations after the first are a module's own (no result overlaps them).
void apply(Tensor& output, const Tensor& input, const kernels::View3& x,
           std::span<const Normalization> norms, const Tensor& weight, const Tensor& bias,
           const FusedActivation& activation, const detail::Partition& part, Also also = {});
/// apply() of one normalization over every value of @p x.
inline void apply(Tensor& output, const Tensor& input, const kernels::View3& x,
                  const Normalization& norm, const Tensor& weight, const Tensor& bias,
                  const FusedActivation& activation, Also also = {}) {
  apply(output, input, x, {&norm, 1}, weight, bias, activation, {}, also);
}

/// Σ dy' and Σ dy' · (x − mean) of each channel over group @p g of @p part into @p sums (dy of
/// x's shape and dtype), dy' = dy gated by @p activation at z = (x − mean) · invstd · weight +
/// bias, recomputed as apply() computes it (dy' = dy without an activation).
void backward_sums(GradStats& sums, const kernels::View3& dy, const kernels::View3& x,
                   const Normalization& norm, const Tensor& weight, const Tensor& bias,
                   const FusedActivation& activation, const detail::Partition& part, int64_t g,
                   Also also = {});
/// backward_sums() of every group of @p part into @p sums[g] (with @p norms[g]), the groups on
/// the threads.
void backward_sums(std::span<GradStats> sums, const kernels::View3& dy, const kernels::View3& x,
                   std::span<const Normalization> norms, const Tensor& weight, const Tensor& bias,
                   const FusedActivation& activation, const detail::Partition& part);
/// backward_sums() over every value of @p x.
inline void backward_sums(GradStats& sums, const kernels::View3& dy, const kernels::View3& x,
                          const Normalization& norm, const Tensor& weight, const Tensor& bias,
                          const FusedActivation& activation, Also also = {}) {
  backward_sums(sums, dy, x, norm, weight, bias, activation, {}, 0, also);
}

/// The input gradient into @p grad_input (see batch_norm_backward_input), group g of @p part
/// with @p norms[g] and, with @p batch_statistics, @p globals[g]: the sums of the batch the
/// forward normalized that group over; 0 outside part.valid. dy is gated by @p activation as in
/// backward_sums(). Normalizations and sums after the first are a module's own.
void backward_input(Tensor& grad_input, const Tensor& grad_output, const Tensor& input,
                    const kernels::View3& dy, const kernels::View3& x,
                    std::span<const Normalization> norms, const Tensor& weight, const Tensor& bias,
                    const FusedActivation& activation, std::span<const GradStats> globals,
                    bool batch_statistics, const detail::Partition& part, Also also = {});
/// backward_input() of one group of every value of @p x.
inline void backward_input(Tensor& grad_input, const Tensor& grad_output, const Tensor& input,
                           const kernels::View3& dy, const kernels::View3& x,
                           const Normalization& norm, const Tensor& weight, const Tensor& bias,
                           const FusedActivation& activation, const GradStats& global,
                           bool batch_statistics, Also also = {}) {
  backward_input(grad_input, grad_output, input, dy, x, {&norm, 1}, weight, bias, activation,
                 {&global, 1}, batch_statistics, {}, also);
}

/// grad_weight = Σ_g Σ dy · (x − mean_g) · invstd_g and grad_bias = Σ_g Σ dy over the groups
/// (@p sums[g], @p norms[g]), in @p dtype.
void backward_params(BatchNormGradients& grads, std::span<const GradStats> sums,
                     std::span<const Normalization> norms, DType dtype, Also also = {});
/// backward_params() of one group.
inline void backward_params(BatchNormGradients& grads, const GradStats& sums,
                            const Normalization& norm, DType dtype, Also also = {}) {
  backward_params(grads, {&sums, 1}, {&norm, 1}, dtype, also);
}
/// The results of backward_params(), chosen (reused or replaced) without writing them.
void backward_params_results(BatchNormGradients& grads, const GradStats& sums,
                             const Normalization& norm, DType dtype, Also also = {});

}  // namespace bn1d::step
