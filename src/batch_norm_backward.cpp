// SPDX-License-Identifier: MIT
// Functional batch-norm backward: the public steps validate their arguments, then run the
// unchecked steps of steps.hpp (docs/math.md derives each term).

#include "bn1d/batch_norm.hpp"
#include "channel_values.hpp"
#include "step_workspace.hpp"
#include "steps.hpp"
#include "validate.hpp"

namespace bn1d {

using detail::f64;
using detail::f64_mut;

namespace {

void check_grad_stats(const GradStats& s, std::string_view name, int64_t C) {
  if (s.count < 0)
    throw Error(std::string(name) + " has negative count " + std::to_string(s.count));
  detail::check_stat_tensor(s.sum_dy, name, C, " sum_dy");
  detail::check_stat_tensor(s.sum_dy_xmu, name, C, " sum_dy_xmu");
}

}  // namespace

// The checks of every public step that reads a saved forward's parameters and activation.
static void check_forward_params(const Tensor& weight, const Tensor& bias,
                                 const FusedActivation& activation, int64_t C, DType dtype) {
  detail::check_param(weight, "weight", C, dtype);
  detail::check_param(bias, "bias", C, dtype);
  detail::check_params_agree({{&weight, "weight"}, {&bias, "bias"}});
  detail::check_activation(activation);
}

// backward_stats() over the positions of @p part.
static void backward_stats_over(GradStats& stats, const Tensor& grad_output, const Tensor& input,
                                const Normalization& norm, const Tensor& weight, const Tensor& bias,
                                const FusedActivation& activation, const detail::Partition& part) {
  const kernels::View3 x = detail::input_view(input);
  if (part.valid != nullptr) part.valid->check_fits(input.sizes());
  detail::check_same_shape(grad_output, "grad_output", input);
  const kernels::View3 dy = detail::input_view(grad_output, "grad_output");
  detail::check_normalization(norm, x.C);
  check_forward_params(weight, bias, activation, x.C, input.dtype());
  step::backward_sums(stats, dy, x, norm, weight, bias, activation, part, 0,
                      {&grad_output, &input});
}

void backward_stats(GradStats& stats, const Tensor& grad_output, const Tensor& input,
                    const Normalization& norm, const Tensor& weight, const Tensor& bias,
                    const FusedActivation& activation) {
  backward_stats_over(stats, grad_output, input, norm, weight, bias, activation, {});
}

void backward_stats(GradStats& stats, const Tensor& grad_output, const Tensor& input,
                    const Normalization& norm) {
  backward_stats_over(stats, grad_output, input, norm, Tensor(), Tensor(), {}, {});
}

GradStats backward_stats(const Tensor& grad_output, const Tensor& input, const Normalization& norm,
                         const Tensor& weight, const Tensor& bias,
                         const FusedActivation& activation, const ValidPositions& valid) {
  GradStats stats;
  backward_stats_over(stats, grad_output, input, norm, weight, bias, activation, {&valid, {}});
  return stats;
}

GradStats backward_stats(const Tensor& grad_output, const Tensor& input, const Normalization& norm,
                         const ValidPositions& valid) {
  return backward_stats(grad_output, input, norm, Tensor(), Tensor(), {}, valid);
}

GradStats backward_stats(const Tensor& grad_output, const Tensor& input, const Normalization& norm,
                         const Tensor& weight, const Tensor& bias,
                         const FusedActivation& activation) {
  GradStats stats;
  backward_stats(stats, grad_output, input, norm, weight, bias, activation);
  return stats;
}

GradStats backward_stats(const Tensor& grad_output, const Tensor& input,
                         const Normalization& norm) {
  return backward_stats(grad_output, input, norm, Tensor(), Tensor(), {});
}

GradStats combine_grad_stats(std::span<const GradStats> parts) {
  if (parts.empty()) throw Error("combine_grad_stats: expected at least one part, got none");
  const int64_t C = parts[0].sum_dy.defined() ? parts[0].sum_dy.numel() : 0;
  int64_t total = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    check_grad_stats(parts[i], "combine_grad_stats: part " + std::to_string(i), C);
    if (__builtin_add_overflow(total, parts[i].count, &total)) {
      throw Error("combine_grad_stats: the counts of parts 0 to " + std::to_string(i) +
                  " sum past the int64 range (part " + std::to_string(i) + " has count " +
                  std::to_string(parts[i].count) + ")");
    }
  }
  GradStats out{0, detail::stat_tensor(C), detail::stat_tensor(C)};
  double* sum_dy = f64_mut(out.sum_dy);
  double* sum_dy_xmu = f64_mut(out.sum_dy_xmu);
  for (const GradStats& p : parts) {
    const double* p_sum_dy = f64(p.sum_dy);
    const double* p_sum_dy_xmu = f64(p.sum_dy_xmu);
    for (int64_t c = 0; c < C; ++c) {
      sum_dy[c] += p_sum_dy[c];
      sum_dy_xmu[c] += p_sum_dy_xmu[c];
    }
    out.count += p.count;
  }
  return out;
}

// batch_norm_backward_input() at the positions of @p part.
static void backward_input_over(Tensor& grad_input, const Tensor& grad_output, const Tensor& input,
                                const Normalization& norm, const Tensor& weight, const Tensor& bias,
                                const GradStats& global, bool batch_statistics,
                                const FusedActivation& activation, const detail::Partition& part) {
  const kernels::View3 x = detail::input_view(input);
  if (part.valid != nullptr) part.valid->check_fits(input.sizes());
  detail::check_same_shape(grad_output, "grad_output", input);
  const kernels::View3 dy = detail::input_view(grad_output, "grad_output");
  detail::check_normalization(norm, x.C);
  check_forward_params(weight, bias, activation, x.C, input.dtype());
  if (batch_statistics) {
    check_grad_stats(global, "global", x.C);
    if (global.count == 0 && x.count() > 0) {
      throw Error(
          "batch_norm_backward_input: expected global statistics of at least one value per "
          "channel, got count 0");
    }
  }
  step::backward_input(grad_input, grad_output, input, dy, x, {&norm, 1}, weight, bias, activation,
                       {&global, 1}, batch_statistics, part);
}

void batch_norm_backward_input(Tensor& grad_input, const Tensor& grad_output, const Tensor& input,
                               const Normalization& norm, const Tensor& weight, const Tensor& bias,
                               const GradStats& global, bool batch_statistics,
                               const FusedActivation& activation) {
  backward_input_over(grad_input, grad_output, input, norm, weight, bias, global, batch_statistics,
                      activation, {});
}

void batch_norm_backward_input(Tensor& grad_input, const Tensor& grad_output, const Tensor& input,
                               const Normalization& norm, const Tensor& weight,
                               const GradStats& global, bool batch_statistics) {
  backward_input_over(grad_input, grad_output, input, norm, weight, Tensor(), global,
                      batch_statistics, {}, {});
}

Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const Tensor& bias, const GradStats& global, bool batch_statistics,
                                 const FusedActivation& activation, const ValidPositions& valid) {
  Tensor grad_input;
  backward_input_over(grad_input, grad_output, input, norm, weight, bias, global, batch_statistics,
                      activation, {&valid, {}});
  return grad_input;
}

Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const GradStats& global, bool batch_statistics,
                                 const ValidPositions& valid) {
  return batch_norm_backward_input(grad_output, input, norm, weight, Tensor(), global,
                                   batch_statistics, {}, valid);
}

Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const Tensor& bias, const GradStats& global, bool batch_statistics,
                                 const FusedActivation& activation) {
  Tensor grad_input;
  batch_norm_backward_input(grad_input, grad_output, input, norm, weight, bias, global,
                            batch_statistics, activation);
  return grad_input;
}

Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const GradStats& global, bool batch_statistics) {
  return batch_norm_backward_input(grad_output, input, norm, weight, Tensor(), global,
                                   batch_statistics, {});
}

void batch_norm_backward_params(BatchNormGradients& grads, const GradStats& stats,
                                const Normalization& norm, DType dtype) {
  const int64_t C = norm.mean.defined() ? norm.mean.numel() : 0;
  detail::check_normalization(norm, C);
  check_grad_stats(stats, "stats", C);
  detail::check_floating_dtype(dtype, "dtype");
  step::backward_params(grads, stats, norm, dtype);
}

BatchNormGradients batch_norm_backward_params(const GradStats& stats, const Normalization& norm,
                                              DType dtype) {
  BatchNormGradients grads;
  batch_norm_backward_params(grads, stats, norm, dtype);
  return grads;
}

// batch_norm_backward() over the positions of @p part.
static void backward_over(BatchNormGradients& grads, const Tensor& grad_output, const Tensor& input,
                          const Normalization& norm, const Tensor& weight, const Tensor& bias,
                          bool batch_statistics, bool affine, const FusedActivation& activation,
                          const detail::Partition& part) {
  const kernels::View3 x = detail::input_view(input);
  if (part.valid != nullptr) part.valid->check_fits(input.sizes());
  detail::check_same_shape(grad_output, "grad_output", input);
  const kernels::View3 dy = detail::input_view(grad_output, "grad_output");
  detail::check_normalization(norm, x.C);
  check_forward_params(weight, bias, activation, x.C, input.dtype());
  // Parameter gradients in the weight's dtype (float32 for a mixed-precision bfloat16 input).
  const DType param_dtype = weight.defined() ? weight.dtype() : input.dtype();
  GradStats& sums = detail::thread_workspace().grad_sums;  // steady-state calls allocate nothing
  step::backward_sums(sums, dy, x, norm, weight, bias, activation, part, 0);
  // Every result is chosen (overlapping no input and no other result) before any is written.
  step::reserve_workspace(x.C);
  detail::reuse_or_allocate_like(grads.input, input,
                                 {&input, &grad_output, &norm.mean, &norm.invstd, &weight, &bias},
                                 {&grads.weight, &grads.bias});
  if (affine) {
    step::backward_params_results(grads, sums, norm, param_dtype,
                                  {&input, &grad_output, &weight, &bias, &grads.input});
  }
  step::backward_input(grads.input, grad_output, input, dy, x, {&norm, 1}, weight, bias, activation,
                       {&sums, 1}, batch_statistics, part, {&grads.weight, &grads.bias});
  if (affine) {
    step::backward_params(grads, sums, norm, param_dtype,
                          {&input, &grad_output, &weight, &bias, &grads.input});
  } else {
    grads.weight = Tensor();
    grads.bias = Tensor();
  }
}

void batch_norm_backward(BatchNormGradients& grads, const Tensor& grad_output, const Tensor& input,
                         const Normalization& norm, const Tensor& weight, const Tensor& bias,
                         bool batch_statistics, bool affine, const FusedActivation& activation) {
  backward_over(grads, grad_output, input, norm, weight, bias, batch_statistics, affine, activation,
                {});
}

void batch_norm_backward(BatchNormGradients& grads, const Tensor& grad_output, const Tensor& input,
                         const Normalization& norm, const Tensor& weight, bool batch_statistics,
                         bool affine) {
  backward_over(grads, grad_output, input, norm, weight, Tensor(), batch_statistics, affine, {},
                {});
}

BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       const Tensor& bias, bool batch_statistics, bool affine,
                                       const FusedActivation& activation,
                                       const ValidPositions& valid) {
  BatchNormGradients grads;
  backward_over(grads, grad_output, input, norm, weight, bias, batch_statistics, affine, activation,
                {&valid, {}});
  return grads;
}

BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       bool batch_statistics, bool affine,
                                       const ValidPositions& valid) {
  return batch_norm_backward(grad_output, input, norm, weight, Tensor(), batch_statistics, affine,
                             {}, valid);
}

BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       const Tensor& bias, bool batch_statistics, bool affine,
                                       const FusedActivation& activation) {
  BatchNormGradients grads;
  batch_norm_backward(grads, grad_output, input, norm, weight, bias, batch_statistics, affine,
                      activation);
  return grads;
}

BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       bool batch_statistics, bool affine) {
  return batch_norm_backward(grad_output, input, norm, weight, Tensor(), batch_statistics, affine,
                             {});
}

}  // namespace bn1d
