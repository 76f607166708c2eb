// SPDX-License-Identifier: MIT
// Functional batch-norm backward: validate, derive per-channel coefficients, route to kernels.
// The derivation of each term is in docs/math.md.
#include <vector>

#include "bn1d/batch_norm.hpp"
#include "channel_values.hpp"
#include "kernels/reference.hpp"
#include "validate.hpp"

namespace bn1d {

using detail::f64;
using detail::f64_mut;

GradStats backward_stats(const Tensor& grad_output, const Tensor& input, const Normalization& norm) {
  const kernels::View3 x = detail::input_view(input);
  detail::check_same_shape(grad_output, "grad_output", input);
  const kernels::View3 dy = detail::input_view(grad_output, "grad_output");
  detail::check_normalization(norm, x.C);
  GradStats s{x.count(), detail::stat_tensor(x.C), detail::stat_tensor(x.C)};
  if (x.count() > 0) {
    kernels::reference::backward_sums(f64_mut(s.sum_dy), f64_mut(s.sum_dy_xmu), dy, x, f64(norm.mean));
  }
  return s;
}

GradStats combine_grad_stats(std::span<const GradStats> parts) {
  if (parts.empty()) throw Error("combine_grad_stats: expected at least one part, got none");
  const int64_t C = parts[0].sum_dy.defined() ? parts[0].sum_dy.numel() : 0;
  GradStats out{0, detail::stat_tensor(C), detail::stat_tensor(C)};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string name = "combine_grad_stats: part " + std::to_string(i);
    if (parts[i].count < 0) throw Error(name + " has negative count " + std::to_string(parts[i].count));
    detail::check_stat_tensor(parts[i].sum_dy, name + " sum_dy", C);
    detail::check_stat_tensor(parts[i].sum_dy_xmu, name + " sum_dy_xmu", C);
  }
  for (const GradStats& p : parts) {
    for (int64_t c = 0; c < C; ++c) {
      f64_mut(out.sum_dy)[c] += f64(p.sum_dy)[c];
      f64_mut(out.sum_dy_xmu)[c] += f64(p.sum_dy_xmu)[c];
    }
    out.count += p.count;
  }
  return out;
}

Tensor batch_norm_backward_input(const Tensor& grad_output, const Tensor& input,
                                 const Normalization& norm, const Tensor& weight,
                                 const GradStats& global, bool batch_statistics) {
  const kernels::View3 x = detail::input_view(input);
  detail::check_same_shape(grad_output, "grad_output", input);
  const kernels::View3 dy = detail::input_view(grad_output, "grad_output");
  detail::check_normalization(norm, x.C);
  detail::check_optional_param(weight, "weight", x.C, input.dtype());
  if (batch_statistics) {
    detail::check_stat_tensor(global.sum_dy, "global.sum_dy", x.C);
    detail::check_stat_tensor(global.sum_dy_xmu, "global.sum_dy_xmu", x.C);
    if (global.count <= 0 && x.count() > 0) {
      throw Error("batch_norm_backward_input: expected global statistics of at least one value per channel, got count " +
                  std::to_string(global.count));
    }
  }
  // dx = a · dy + b · (x − mean) + k per channel, with g = weight · invstd:
  //   a = g                                   (direct path through x̂)
  //   k = −g · Σdy / n                        (through the batch mean)
  //   b = −g · invstd² · Σdy(x − mean) / n    (through the batch variance)
  // With running statistics the mean and variance are constants: b = k = 0.
  const std::vector<double> w = detail::channel_values(weight, x.C, 1.0);
  std::vector<double> a(w.size()), b(w.size(), 0.0), k(w.size(), 0.0);
  for (int64_t c = 0; c < x.C; ++c) {
    const double invstd = f64(norm.invstd)[c];
    a[c] = w[c] * invstd;
    if (batch_statistics && global.count > 0) {
      const double n = static_cast<double>(global.count);
      k[c] = -a[c] * f64(global.sum_dy)[c] / n;
      b[c] = -a[c] * invstd * invstd * f64(global.sum_dy_xmu)[c] / n;
    }
  }
  Tensor dx = Tensor::empty(input.sizes(), input.dtype());
  if (dx.numel() > 0) {
    kernels::reference::backward_input(dx.raw_data(), dy, x, f64(norm.mean), a.data(), b.data(), k.data());
  }
  return dx;
}

BatchNormGradients batch_norm_backward_params(const GradStats& stats, const Normalization& norm,
                                              DType dtype) {
  const int64_t C = norm.mean.defined() ? norm.mean.numel() : 0;
  detail::check_normalization(norm, C);
  detail::check_stat_tensor(stats.sum_dy, "stats.sum_dy", C);
  detail::check_stat_tensor(stats.sum_dy_xmu, "stats.sum_dy_xmu", C);
  if (dtype != DType::Float32 && dtype != DType::Float64) {
    throw Error(std::string("dtype: expected float32 or float64, got ") + dtype_name(dtype));
  }
  // grad_weight = Σ dy · x̂ = Σ dy (x − mean) · invstd;  grad_bias = Σ dy.
  std::vector<double> gw(static_cast<std::size_t>(C)), gb(static_cast<std::size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    gw[c] = f64(stats.sum_dy_xmu)[c] * f64(norm.invstd)[c];
    gb[c] = f64(stats.sum_dy)[c];
  }
  BatchNormGradients g;
  g.weight = Tensor::empty({C}, dtype);
  g.bias = Tensor::empty({C}, dtype);
  detail::store_channel_values(g.weight, gw);
  detail::store_channel_values(g.bias, gb);
  return g;
}

BatchNormGradients batch_norm_backward(const Tensor& grad_output, const Tensor& input,
                                       const Normalization& norm, const Tensor& weight,
                                       bool batch_statistics, bool affine) {
  const GradStats stats = backward_stats(grad_output, input, norm);
  BatchNormGradients g;
  if (affine) g = batch_norm_backward_params(stats, norm, input.dtype());
  g.input = batch_norm_backward_input(grad_output, input, norm, weight, stats, batch_statistics);
  return g;
}

}  // namespace bn1d
