// SPDX-License-Identifier: MIT
// Functional batch norm, forward: validate the arguments, derive per-channel coefficients, route
// to the kernels. No per-element math lives here.
#include "bn1d/batch_norm.hpp"

#include <algorithm>

#include "channel_values.hpp"
#include "format.hpp"
#include "route.hpp"
#include "validate.hpp"
#include "writable.hpp"

namespace bn1d {

using detail::f64;
using detail::f64_mut;

namespace {

int64_t channels_of(const Tensor& stat) { return stat.defined() ? stat.numel() : 0; }

void check_stats(const BatchStats& stats, std::string_view name, int64_t C) {
  if (stats.count < 0)
    throw Error(std::string(name) + " has negative count " + std::to_string(stats.count));
  detail::check_stat_tensor(stats.mean, name, C, " mean");
  detail::check_stat_tensor(stats.m2, name, C, " m2");
}

}  // namespace

void batch_stats(BatchStats& stats, const Tensor& input) {
  const kernels::View3 x = detail::input_view(input);
  detail::reuse_or_allocate(stats.mean, x.C, DType::Float64);
  detail::reuse_or_allocate(stats.m2, x.C, DType::Float64);
  stats.count = x.count();
  route::channel_stats(f64_mut(stats.mean), f64_mut(stats.m2), x);
}

BatchStats batch_stats(const Tensor& input) {
  BatchStats stats;
  batch_stats(stats, input);
  return stats;
}

BatchStats combine_stats(std::span<const BatchStats> parts) {
  if (parts.empty()) throw Error("combine_stats: expected at least one part, got none");
  const int64_t C = channels_of(parts[0].mean);
  for (std::size_t i = 0; i < parts.size(); ++i)
    check_stats(parts[i], "combine_stats: part " + std::to_string(i), C);
  BatchStats out{0, detail::stat_tensor(C), detail::stat_tensor(C)};
  double* mean = f64_mut(out.mean);
  double* m2 = f64_mut(out.m2);
  for (const BatchStats& p : parts) {
    if (p.count == 0) continue;
    // Chan et al.: merge (n_a, mean_a, M2_a) with (n_b, mean_b, M2_b).
    const double na = static_cast<double>(out.count), nb = static_cast<double>(p.count);
    const double n = na + nb;
    const double* p_mean = f64(p.mean);
    const double* p_m2 = f64(p.m2);
    for (int64_t c = 0; c < C; ++c) {
      const double delta = p_mean[c] - mean[c];
      mean[c] += delta * (nb / n);
      m2[c] += p_m2[c] + delta * delta * (na * nb / n);
    }
    out.count += p.count;
  }
  return out;
}

void normalization_from_batch(Normalization& norm, const BatchStats& stats, double eps) {
  detail::check_eps(eps);
  const int64_t C = channels_of(stats.mean);
  check_stats(stats, "stats", C);
  if (stats.count == 0) {
    throw Error(
        "normalization_from_batch: expected statistics of at least one value per channel, got "
        "count 0");
  }
  detail::reuse_or_allocate(norm.mean, C, DType::Float64, {&stats.mean, &stats.m2});
  detail::reuse_or_allocate(norm.invstd, C, DType::Float64, {&stats.mean, &stats.m2});
  const double n = static_cast<double>(stats.count);
  const double* mean = f64(stats.mean);
  const double* m2 = f64(stats.m2);
  double* out_mean = f64_mut(norm.mean);
  double* out_invstd = f64_mut(norm.invstd);
  std::copy_n(mean, C, out_mean);
  route::invstd(out_invstd, m2, n, eps, C);  // variance m2 / n
}

Normalization normalization_from_batch(const BatchStats& stats, double eps) {
  Normalization norm;
  normalization_from_batch(norm, stats, eps);
  return norm;
}

void normalization_from_running(Normalization& norm, const Tensor& running_mean,
                                const Tensor& running_var, double eps) {
  detail::check_eps(eps);
  if (!running_mean.defined() || !running_var.defined()) {
    throw Error("running_mean and running_var must be defined in evaluation mode");
  }
  if (running_mean.dtype() == DType::Int64) {
    throw Error("running_mean: expected dtype float32 or float64, got int64");
  }
  const int64_t C = running_mean.numel();
  detail::check_channel_tensor(running_mean, "running_mean", C, running_mean.dtype());
  detail::check_channel_tensor(running_var, "running_var", C, running_mean.dtype());
  const double* var = detail::channel_f64(running_var, 0);
  if (const int64_t c = route::first_negative_sum(var, eps, C); c < C) {  // before any write
    throw Error("running_var: expected non-negative variances, got running_var[" +
                std::to_string(c) + "] = " + python_float_repr(var[c]) + " with eps " +
                python_float_repr(eps));
  }
  detail::reuse_or_allocate(norm.mean, C, DType::Float64, {&running_mean, &running_var});
  detail::reuse_or_allocate(norm.invstd, C, DType::Float64, {&running_mean, &running_var});
  detail::load_channels(f64_mut(norm.mean), running_mean);
  route::invstd(f64_mut(norm.invstd), var, 1.0, eps, C);
}

Normalization normalization_from_running(const Tensor& running_mean, const Tensor& running_var,
                                         double eps) {
  Normalization norm;
  normalization_from_running(norm, running_mean, running_var, eps);
  return norm;
}

void update_running_stats(const Tensor& running_mean, const Tensor& running_var,
                          const BatchStats& stats, double momentum) {
  detail::check_momentum(momentum);
  const int64_t C = channels_of(stats.mean);
  check_stats(stats, "stats", C);
  if (stats.count < 2) {
    throw Error(
        "update_running_stats: the unbiased variance needs more than 1 value per channel, got "
        "count " +
        std::to_string(stats.count));
  }
  if (!running_mean.defined() || running_mean.dtype() == DType::Int64) {
    throw Error("running_mean: expected a defined float32 or float64 tensor");
  }
  detail::check_channel_tensor(running_mean, "running_mean", C, running_mean.dtype());
  detail::check_channel_tensor(running_var, "running_var", C, running_mean.dtype());
  detail::check_writable(running_mean, "running_mean");
  detail::check_writable(running_var, "running_var");
  const double unbias = 1.0 / static_cast<double>(stats.count - 1);
  double* rmean = detail::scratch(0, static_cast<std::size_t>(C));
  double* rvar = detail::scratch(1, static_cast<std::size_t>(C));
  detail::load_channels(rmean, running_mean);
  detail::load_channels(rvar, running_var);
  route::running_update(rmean, rvar, f64(stats.mean), f64(stats.m2), momentum, unbias, C);
  detail::store_channels(running_mean, rmean);
  detail::store_channels(running_var, rvar);
}

void batch_norm_apply(Tensor& output, const Tensor& input, const Normalization& norm,
                      const Tensor& weight, const Tensor& bias) {
  const kernels::View3 x = detail::input_view(input);
  detail::check_normalization(norm, x.C);
  detail::check_optional_param(weight, "weight", x.C, input.dtype());
  detail::check_optional_param(bias, "bias", x.C, input.dtype());
  detail::reuse_or_allocate_like(output, input, {&input});
  if (output.numel() == 0) return;
  // y = (x − mean) · scale + shift, scale = weight · invstd (invstd without weight), shift = bias
  // (0 without bias).
  const auto C = static_cast<std::size_t>(x.C);
  const double* scale = f64(norm.invstd);
  if (const double* w = detail::channel_f64(weight, 2)) {
    double* weighted = detail::scratch(0, C);
    route::multiply(weighted, w, scale, x.C);
    scale = weighted;
  }
  const double* shift = detail::channel_f64(bias, 1);
  if (shift == nullptr) {
    double* zeros = detail::scratch(1, C);
    std::fill_n(zeros, C, 0.0);
    shift = zeros;
  }
  route::normalize(detail::output_view(output), x, f64(norm.mean), scale, shift);
}

Tensor batch_norm_apply(const Tensor& input, const Normalization& norm, const Tensor& weight,
                        const Tensor& bias) {
  Tensor output;
  batch_norm_apply(output, input, norm, weight, bias);
  return output;
}

Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps) {
  const kernels::View3 x = detail::input_view(input);
  detail::check_eps(eps);
  detail::check_momentum(momentum);
  detail::check_optional_param(weight, "weight", x.C, input.dtype());
  detail::check_optional_param(bias, "bias", x.C, input.dtype());
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
  if (x.count() == 0) return Tensor::empty(input.sizes(), input.dtype());
  const BatchStats stats = batch_stats(input);
  Tensor out = batch_norm_apply(input, normalization_from_batch(stats, eps), weight, bias);
  if (tracking) update_running_stats(running_mean, running_var, stats, momentum);
  return out;
}

}  // namespace bn1d
