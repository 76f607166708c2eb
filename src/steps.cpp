// SPDX-License-Identifier: MIT
// The steps of batch norm on validated arguments: per-channel coefficients in float64, then the
// kernel chosen by route.cpp. No per-element math lives here; docs/math.md derives each term.
#include "steps.hpp"

#include <algorithm>
#include <vector>

#include "channel_values.hpp"
#include "format.hpp"
#include "parallel_blocks.hpp"
#include "route.hpp"
#include "route_groups.hpp"
#include "step_workspace.hpp"

namespace bn1d::detail {

StepWorkspace& thread_workspace() {
  thread_local StepWorkspace workspace;
  return workspace;
}

}  // namespace bn1d::detail

namespace bn1d::step {

using detail::f64;
using detail::f64_mut;

void reserve_workspace(int64_t C, int64_t groups) {
  const auto n = static_cast<std::size_t>(C);
  detail::StepWorkspace& ws = detail::thread_workspace();
  for (std::vector<double>* b : {&ws.weight, &ws.bias, &ws.running_mean, &ws.running_var,
                                 &ws.grad_weight, &ws.block_a, &ws.block_b})
    detail::sized(*b, n);
  for (std::vector<double>* b : {&ws.scale, &ws.coef_a, &ws.coef_b, &ws.coef_k})
    detail::sized(*b, n * static_cast<std::size_t>(groups));
}

void batch_stats(BatchStats& stats, const kernels::View3& x, const detail::Partition& part,
                 int64_t g, Also also) {
  detail::reuse_or_allocate(stats.mean, x.C, DType::Float64, also);
  detail::reuse_or_allocate(stats.m2, x.C, DType::Float64, also, {&stats.mean});
  stats.count = detail::group_count(part, g, x.N, x.L);
  route::group_stats(f64_mut(stats.mean), f64_mut(stats.m2), x, part, g);
}

void batch_stats(std::span<BatchStats> stats, const kernels::View3& x,
                 const detail::Partition& part) {
  for (int64_t g = 0; g < part.groups(); ++g) {  // every result chosen first
    detail::reuse_or_allocate(stats[g].mean, x.C, DType::Float64);
    detail::reuse_or_allocate(stats[g].m2, x.C, DType::Float64, {}, {&stats[g].mean});
    stats[g].count = detail::group_count(part, g, x.N, x.L);
  }
  detail::parallel_blocks(part.groups(), [&](int64_t g) {
    route::group_stats(f64_mut(stats[g].mean), f64_mut(stats[g].m2), x, part, g);
  });
}

void normalization_from_batch(Normalization& norm, const BatchStats& stats, double eps) {
  const int64_t C = stats.mean.numel();
  detail::reuse_or_allocate(norm.mean, C, DType::Float64, {&stats.mean, &stats.m2});
  detail::reuse_or_allocate(norm.invstd, C, DType::Float64, {&stats.mean, &stats.m2, &norm.mean});
  std::copy_n(f64(stats.mean), C, f64_mut(norm.mean));
  route::invstd(f64_mut(norm.invstd), f64(stats.m2), static_cast<double>(stats.count), eps, C);
}

void normalization_from_running(Normalization& norm, const Tensor& running_mean,
                                const Tensor& running_var, double eps) {
  const int64_t C = running_mean.numel();
  const double* var = detail::channel_f64(running_var, detail::thread_workspace().running_var);
  if (const int64_t c = route::first_negative_sum(var, eps, C); c < C) {  // before any write
    throw Error("running_var: expected non-negative variances, got running_var[" +
                std::to_string(c) + "] = " + python_float_repr(var[c]) + " with eps " +
                python_float_repr(eps));
  }
  detail::reuse_or_allocate(norm.mean, C, DType::Float64, {&running_mean, &running_var});
  detail::reuse_or_allocate(norm.invstd, C, DType::Float64,
                            {&running_mean, &running_var, &norm.mean});
  detail::load_channels(f64_mut(norm.mean), running_mean);
  route::invstd(f64_mut(norm.invstd), var, 1.0, eps, C);
}

void update_running_stats(const Tensor& running_mean, const Tensor& running_var,
                          const BatchStats& stats, double momentum) {
  const int64_t C = stats.mean.numel();
  const auto n = static_cast<std::size_t>(C);
  detail::StepWorkspace& ws = detail::thread_workspace();
  double* rmean = detail::sized(ws.running_mean, n);
  double* rvar = detail::sized(ws.running_var, n);
  detail::load_channels(rmean, running_mean);
  detail::load_channels(rvar, running_var);
  const double unbias = 1.0 / static_cast<double>(stats.count - 1);
  route::running_update(rmean, rvar, f64(stats.mean), f64(stats.m2), momentum, unbias, C);
  detail::store_channels(running_mean, rmean);
  detail::store_channels(running_var, rvar);
}

namespace {

// z's coefficients as apply() hands them to normalize, per group g: scale_g = weight · invstd_g
// (invstd_g itself without weight) and shift = bias (zeros without bias). The backward's gate
// recomputes z from the same bits (docs/math.md#fused-activation).
struct ZCoefficients {
  const double* weighted = nullptr;  // weight · invstd_g at g·C; nullptr without weight
  const double* shift = nullptr;

  const double* scale(std::span<const Normalization> norms, int64_t g, int64_t C) const {
    return weighted != nullptr ? weighted + g * C : f64(norms[g].invstd);
  }
};

// The coefficients for @p w (weight as float64, or nullptr) and @p bias, into the workspace's
// scale and bias buffers.
ZCoefficients z_coefficients(const double* w, const Tensor& bias,
                             std::span<const Normalization> norms, int64_t C) {
  const auto n = static_cast<std::size_t>(C);
  detail::StepWorkspace& ws = detail::thread_workspace();
  ZCoefficients z;
  z.shift = detail::channel_f64(bias, ws.bias);
  if (z.shift == nullptr) {
    double* zeros = detail::sized(ws.bias, n);
    std::fill_n(zeros, n, 0.0);
    z.shift = zeros;
  }
  if (w != nullptr) {
    const auto G = static_cast<int64_t>(norms.size());
    double* weighted = detail::sized(ws.scale, n * static_cast<std::size_t>(G));
    for (int64_t g = 0; g < G; ++g) route::multiply(weighted + g * C, w, f64(norms[g].invstd), C);
    z.weighted = weighted;
  }
  return z;
}

// The kernels' activation of group @p g (none without an activation).
kernels::Act group_act(const FusedActivation& activation, const ZCoefficients& z,
                       std::span<const Normalization> norms, int64_t g, int64_t C) {
  if (!activation.enabled()) return {};
  return {activation.kind, activation.negative_slope, z.scale(norms, g, C), z.shift};
}

// z's coefficients for the backward's gate; none needed without an activation.
ZCoefficients gate_coefficients(const FusedActivation& activation, const Tensor& weight,
                                const Tensor& bias, std::span<const Normalization> norms,
                                int64_t C) {
  if (!activation.enabled()) return {};
  return z_coefficients(detail::channel_f64(weight, detail::thread_workspace().weight), bias, norms,
                        C);
}

}  // namespace

void apply(Tensor& output, const Tensor& input, const kernels::View3& x,
           std::span<const Normalization> norms, const Tensor& weight, const Tensor& bias,
           const FusedActivation& activation, const detail::Partition& part, Also also) {
  const Normalization& first = norms[0];
  detail::reuse_or_allocate_like(output, input,
                                 {&input, &first.mean, &first.invstd, &weight, &bias}, also);
  if (output.numel() == 0) return;
  // y = act((x − mean) · scale + shift), scale = weight · invstd (invstd without weight),
  // shift = bias (0 without bias).
  const int64_t G = part.groups();
  const ZCoefficients z = z_coefficients(
      detail::channel_f64(weight, detail::thread_workspace().weight), bias, norms.first(G), x.C);
  const kernels::Out3 y = detail::output_view(output);
  detail::parallel_blocks(G, [&](int64_t g) {  // groups on the threads
    route::group_normalize(y, x, part, g, f64(norms[g].mean), z.scale(norms, g, x.C), z.shift,
                           group_act(activation, z, norms, g, x.C));
  });
}

void backward_sums(GradStats& sums, const kernels::View3& dy, const kernels::View3& x,
                   const Normalization& norm, const Tensor& weight, const Tensor& bias,
                   const FusedActivation& activation, const detail::Partition& part, int64_t g,
                   Also also) {
  detail::reuse_or_allocate(sums.sum_dy, x.C, DType::Float64,
                            {&norm.mean, &norm.invstd, &weight, &bias}, also);
  detail::reuse_or_allocate(sums.sum_dy_xmu, x.C, DType::Float64,
                            {&norm.mean, &norm.invstd, &weight, &bias, &sums.sum_dy}, also);
  sums.count = detail::group_count(part, g, x.N, x.L);
  const std::span<const Normalization> norms{&norm, 1};
  const ZCoefficients z = gate_coefficients(activation, weight, bias, norms, x.C);
  route::group_backward_sums(f64_mut(sums.sum_dy), f64_mut(sums.sum_dy_xmu), dy, x, part, g,
                             f64(norm.mean), group_act(activation, z, norms, 0, x.C));
}

void backward_sums(std::span<GradStats> sums, const kernels::View3& dy, const kernels::View3& x,
                   std::span<const Normalization> norms, const Tensor& weight, const Tensor& bias,
                   const FusedActivation& activation, const detail::Partition& part) {
  const int64_t G = part.groups();
  for (int64_t g = 0; g < G; ++g) {  // every result chosen first
    detail::reuse_or_allocate(sums[g].sum_dy, x.C, DType::Float64, {&norms[g].mean});
    detail::reuse_or_allocate(sums[g].sum_dy_xmu, x.C, DType::Float64, {&norms[g].mean},
                              {&sums[g].sum_dy});
    sums[g].count = detail::group_count(part, g, x.N, x.L);
  }
  const ZCoefficients z = gate_coefficients(activation, weight, bias, norms.first(G), x.C);
  detail::parallel_blocks(G, [&](int64_t g) {
    route::group_backward_sums(f64_mut(sums[g].sum_dy), f64_mut(sums[g].sum_dy_xmu), dy, x, part, g,
                               f64(norms[g].mean), group_act(activation, z, norms, g, x.C));
  });
}

void backward_input(Tensor& grad_input, const Tensor& grad_output, const Tensor& input,
                    const kernels::View3& dy, const kernels::View3& x,
                    std::span<const Normalization> norms, const Tensor& weight, const Tensor& bias,
                    const FusedActivation& activation, std::span<const GradStats> globals,
                    bool batch_statistics, const detail::Partition& part, Also also) {
  const Normalization& norm = norms[0];
  const GradStats& global = globals[0];
  detail::reuse_or_allocate_like(grad_input, input,
                                 {&input, &grad_output, &norm.mean, &norm.invstd, &weight, &bias,
                                  &global.sum_dy, &global.sum_dy_xmu},
                                 also);
  if (grad_input.numel() == 0) return;
  // dx = a · dy' + b · (x − mean) + k per channel, with g = weight · invstd and dy' = dy gated
  // by the activation (dy without one):
  //   a = g                                   (direct path through x̂)
  //   k = −g · Σdy' / n                       (through the batch mean)
  //   b = −g · invstd² · Σdy'(x − mean) / n   (through the batch variance)
  // With running statistics the mean and variance are constants: b = k = 0.
  const int64_t G = part.groups();
  const auto n = static_cast<std::size_t>(x.C * G);
  detail::StepWorkspace& ws = detail::thread_workspace();
  double* a = detail::sized(ws.coef_a, n);
  double* b = detail::sized(ws.coef_b, n);
  double* k = detail::sized(ws.coef_k, n);
  const double* w = detail::channel_f64(weight, ws.weight);
  const kernels::Out3 dx = detail::output_view(grad_input);
  for (int64_t g = 0; g < G; ++g) {
    const GradStats* sums = batch_statistics ? &globals[g] : nullptr;
    route::backward_coefficients(a + g * x.C, b + g * x.C, k + g * x.C, w, f64(norms[g].invstd),
                                 sums ? f64(sums->sum_dy) : nullptr,
                                 sums ? f64(sums->sum_dy_xmu) : nullptr,
                                 static_cast<double>(sums ? sums->count : 0), x.C);
  }
  const ZCoefficients z =
      activation.enabled() ? z_coefficients(w, bias, norms.first(G), x.C) : ZCoefficients{};
  detail::parallel_blocks(G, [&](int64_t g) {  // groups on the threads
    route::group_backward_input(dx, dy, x, part, g, f64(norms[g].mean), a + g * x.C, b + g * x.C,
                                k + g * x.C, group_act(activation, z, norms, g, x.C));
  });
}

void backward_params_results(BatchNormGradients& grads, const GradStats& sums,
                             const Normalization& norm, DType dtype, Also also) {
  const int64_t C = norm.mean.numel();
  detail::reuse_or_allocate(grads.weight, C, dtype,
                            {&sums.sum_dy, &sums.sum_dy_xmu, &norm.mean, &norm.invstd}, also);
  detail::reuse_or_allocate(
      grads.bias, C, dtype,
      {&sums.sum_dy, &sums.sum_dy_xmu, &norm.mean, &norm.invstd, &grads.weight}, also);
}

void backward_params(BatchNormGradients& grads, std::span<const GradStats> sums,
                     std::span<const Normalization> norms, DType dtype, Also also) {
  const int64_t C = norms[0].mean.numel();
  backward_params_results(grads, sums[0], norms[0], dtype, also);
  // grad_weight = Σ dy · x̂ = Σ dy (x − mean) · invstd;  grad_bias = Σ dy; summed over the
  // groups in order (each with its own mean and invstd).
  detail::StepWorkspace& ws = detail::thread_workspace();
  const auto n = static_cast<std::size_t>(C);
  double* grad_weight = detail::sized(ws.grad_weight, n);
  route::multiply(grad_weight, f64(sums[0].sum_dy_xmu), f64(norms[0].invstd), C);
  const double* grad_bias = f64(sums[0].sum_dy);
  if (sums.size() > 1) {
    double* group_weight = detail::sized(ws.block_a, n);
    double* bias_sum = detail::sized(ws.block_b, n);
    std::copy_n(grad_bias, n, bias_sum);
    for (std::size_t g = 1; g < sums.size(); ++g) {
      route::multiply(group_weight, f64(sums[g].sum_dy_xmu), f64(norms[g].invstd), C);
      kernels::simd::add_slot(grad_weight, bias_sum, group_weight, f64(sums[g].sum_dy), false, C);
    }
    grad_bias = bias_sum;
  }
  detail::store_channels(grads.weight, grad_weight);
  detail::store_channels(grads.bias, grad_bias);
}

}  // namespace bn1d::step
