// SPDX-License-Identifier: MIT
// Functional batch norm: validate the arguments, derive per-channel coefficients, route to the
// kernels. No per-element math lives here.
#include "bn1d/batch_norm.hpp"

#include <cmath>
#include <vector>

#include "channel_values.hpp"
#include "kernels/reference.hpp"
#include "validate.hpp"

namespace bn1d {

using detail::channel_values;
using detail::check_optional_param;
using detail::f64;
using detail::f64_mut;
using detail::store_channel_values;
namespace {

double invstd_of(double var, double eps) {
  // var + eps == 0 (constant channel, eps = 0): PyTorch's convention, normalize to 0, not NaN.
  return var + eps == 0.0 ? 0.0 : 1.0 / std::sqrt(var + eps);
}

}  // namespace

BatchStats batch_stats(const Tensor& input) {
  const kernels::View3 x = detail::input_view(input);
  BatchStats s{x.count(), detail::stat_tensor(x.C), detail::stat_tensor(x.C)};
  if (x.count() > 0) kernels::reference::channel_stats(f64_mut(s.mean), f64_mut(s.m2), x);
  return s;
}

BatchStats combine_stats(std::span<const BatchStats> parts) {
  if (parts.empty()) throw Error("combine_stats: expected at least one part, got none");
  const int64_t C = parts[0].mean.defined() ? parts[0].mean.numel() : 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].count < 0) {
      throw Error("combine_stats: part " + std::to_string(i) + " has negative count " +
                  std::to_string(parts[i].count));
    }
    detail::check_stat_tensor(parts[i].mean, "combine_stats: part " + std::to_string(i) + " mean", C);
    detail::check_stat_tensor(parts[i].m2, "combine_stats: part " + std::to_string(i) + " m2", C);
  }
  BatchStats out{0, detail::stat_tensor(C), detail::stat_tensor(C)};
  double* mean = f64_mut(out.mean);
  double* m2 = f64_mut(out.m2);
  for (const BatchStats& p : parts) {
    if (p.count == 0) continue;
    // Chan et al.: merge (n_a, mean_a, M2_a) with (n_b, mean_b, M2_b).
    const double na = static_cast<double>(out.count), nb = static_cast<double>(p.count);
    const double n = na + nb;
    for (int64_t c = 0; c < C; ++c) {
      const double delta = f64(p.mean)[c] - mean[c];
      mean[c] += delta * (nb / n);
      m2[c] += f64(p.m2)[c] + delta * delta * (na * nb / n);
    }
    out.count += p.count;
  }
  return out;
}

Normalization normalization_from_batch(const BatchStats& stats, double eps) {
  detail::check_eps(eps);
  if (stats.count <= 0) {
    throw Error("normalization_from_batch: expected statistics of at least one value per channel, got count " +
                std::to_string(stats.count));
  }
  const int64_t C = stats.mean.defined() ? stats.mean.numel() : 0;
  detail::check_stat_tensor(stats.mean, "stats.mean", C);
  detail::check_stat_tensor(stats.m2, "stats.m2", C);
  Normalization norm{stats.mean.clone(), detail::stat_tensor(C)};
  const double n = static_cast<double>(stats.count);
  for (int64_t c = 0; c < C; ++c) f64_mut(norm.invstd)[c] = invstd_of(f64(stats.m2)[c] / n, eps);
  return norm;
}

Normalization normalization_from_running(const Tensor& running_mean, const Tensor& running_var,
                                         double eps) {
  detail::check_eps(eps);
  if (!running_mean.defined() || !running_var.defined()) {
    throw Error("running_mean and running_var must be defined in evaluation mode");
  }
  const int64_t C = running_mean.numel();
  detail::check_channel_tensor(running_mean, "running_mean", C, running_mean.dtype());
  detail::check_channel_tensor(running_var, "running_var", C, running_mean.dtype());
  if (running_mean.dtype() == DType::Int64) {
    throw Error("running_mean: expected dtype float32 or float64, got int64");
  }
  const std::vector<double> mean = channel_values(running_mean, C, 0.0);
  const std::vector<double> var = channel_values(running_var, C, 1.0);
  Normalization norm{detail::stat_tensor(C), detail::stat_tensor(C)};
  for (int64_t c = 0; c < C; ++c) {
    if (var[c] + eps < 0) {
      throw Error("running_var: expected non-negative variances, got running_var[" +
                  std::to_string(c) + "] = " + python_float_repr(var[c]) + " with eps " +
                  python_float_repr(eps));
    }
    f64_mut(norm.mean)[c] = mean[c];
    f64_mut(norm.invstd)[c] = invstd_of(var[c], eps);
  }
  return norm;
}

void update_running_stats(const Tensor& running_mean, const Tensor& running_var,
                          const BatchStats& stats, double momentum) {
  detail::check_momentum(momentum);
  const int64_t C = stats.mean.defined() ? stats.mean.numel() : 0;
  detail::check_stat_tensor(stats.mean, "stats.mean", C);
  detail::check_stat_tensor(stats.m2, "stats.m2", C);
  if (stats.count < 2) {
    throw Error("update_running_stats: the unbiased variance needs more than 1 value per channel, got count " +
                std::to_string(stats.count));
  }
  if (!running_mean.defined() || running_mean.dtype() == DType::Int64) {
    throw Error("running_mean: expected a defined float32 or float64 tensor");
  }
  detail::check_channel_tensor(running_mean, "running_mean", C, running_mean.dtype());
  detail::check_channel_tensor(running_var, "running_var", C, running_mean.dtype());
  std::vector<double> mean = channel_values(running_mean, C, 0.0);
  std::vector<double> var = channel_values(running_var, C, 1.0);
  const double unbias = 1.0 / static_cast<double>(stats.count - 1);
  for (int64_t c = 0; c < C; ++c) {
    mean[c] = (1.0 - momentum) * mean[c] + momentum * f64(stats.mean)[c];
    var[c] = (1.0 - momentum) * var[c] + momentum * (f64(stats.m2)[c] * unbias);
  }
  store_channel_values(running_mean, mean);
  store_channel_values(running_var, var);
}

Tensor batch_norm_apply(const Tensor& input, const Normalization& norm, const Tensor& weight,
                        const Tensor& bias) {
  const kernels::View3 x = detail::input_view(input);
  detail::check_normalization(norm, x.C);
  check_optional_param(weight, "weight", x.C, input.dtype());
  check_optional_param(bias, "bias", x.C, input.dtype());
  // y = (x − mean) · scale + shift, scale = invstd · weight, shift = bias.
  std::vector<double> scale = channel_values(weight, x.C, 1.0);
  const std::vector<double> shift = channel_values(bias, x.C, 0.0);
  for (int64_t c = 0; c < x.C; ++c) scale[c] *= f64(norm.invstd)[c];
  Tensor out = Tensor::empty(input.sizes(), input.dtype());
  if (out.numel() > 0) {
    kernels::reference::normalize(out.raw_data(), x, f64(norm.mean), scale.data(), shift.data());
  }
  return out;
}

Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps) {
  const kernels::View3 x = detail::input_view(input);
  detail::check_eps(eps);
  detail::check_momentum(momentum);
  check_optional_param(weight, "weight", x.C, input.dtype());
  check_optional_param(bias, "bias", x.C, input.dtype());
  if (running_mean.defined() != running_var.defined()) {
    throw Error("running_mean and running_var must be both defined or both undefined");
  }
  const bool tracking = running_mean.defined();
  if (tracking) {
    detail::check_channel_tensor(running_mean, "running_mean", x.C, input.dtype());
    detail::check_channel_tensor(running_var, "running_var", x.C, input.dtype());
  }
  if (!training) {
    return batch_norm_apply(input, normalization_from_running(running_mean, running_var, eps),
                            weight, bias);
  }
  detail::check_batch_size(input);
  if (x.count() == 0 || x.C == 0) return Tensor::empty(input.sizes(), input.dtype());
  const BatchStats stats = batch_stats(input);
  Tensor out = batch_norm_apply(input, normalization_from_batch(stats, eps), weight, bias);
  if (tracking) update_running_stats(running_mean, running_var, stats, momentum);
  return out;
}

}  // namespace bn1d
