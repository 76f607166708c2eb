// SPDX-License-Identifier: MIT
// Functional batch norm, forward: the public steps validate their arguments, then run the
// unchecked steps of steps.hpp.
#include "bn1d/batch_norm.hpp"

#include <algorithm>

#include "channel_values.hpp"
#include "format.hpp"
#include "steps.hpp"
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
  step::batch_stats(stats, detail::input_view(input), {&input});
}

BatchStats batch_stats(const Tensor& input) {
  BatchStats stats;
  batch_stats(stats, input);
  return stats;
}

BatchStats combine_stats(std::span<const BatchStats> parts) {
  if (parts.empty()) throw Error("combine_stats: expected at least one part, got none");
  const int64_t C = channels_of(parts[0].mean);
  int64_t total = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    check_stats(parts[i], "combine_stats: part " + std::to_string(i), C);
    if (__builtin_add_overflow(total, parts[i].count, &total)) {
      throw Error("combine_stats: the counts of parts 0 to " + std::to_string(i) +
                  " sum past the int64 range (part " + std::to_string(i) + " has count " +
                  std::to_string(parts[i].count) + ")");
    }
  }
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
  check_stats(stats, "stats", channels_of(stats.mean));
  if (stats.count == 0) {
    throw Error(
        "normalization_from_batch: expected statistics of at least one value per channel, got "
        "count 0");
  }
  const double* m2 = f64(stats.m2);
  for (int64_t c = 0; c < stats.m2.numel(); ++c) {
    if (!(m2[c] >= 0)) {  // negative or NaN: no variance
      throw Error("stats: expected non-negative m2 (a sum of squared deviations), got stats.m2[" +
                  std::to_string(c) + "] = " + python_float_repr(m2[c]));
    }
  }
  step::normalization_from_batch(norm, stats, eps);
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
  detail::check_floating_dtype(running_mean.dtype(), "running_mean");
  const int64_t C = running_mean.numel();
  detail::check_channel_tensor(running_mean, "running_mean", C, running_mean.dtype());
  detail::check_channel_tensor(running_var, "running_var", C, running_mean.dtype());
  step::normalization_from_running(norm, running_mean, running_var, eps);
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
  if (!running_mean.defined()) {
    throw Error("running_mean: expected a defined float32 or float64 tensor");
  }
  detail::check_floating_dtype(running_mean.dtype(), "running_mean");
  detail::check_channel_tensor(running_mean, "running_mean", C, running_mean.dtype());
  detail::check_channel_tensor(running_var, "running_var", C, running_mean.dtype());
  detail::check_writable(running_mean, "running_mean");
  detail::check_writable(running_var, "running_var");
  step::update_running_stats(running_mean, running_var, stats, momentum);
}

void batch_norm_apply(Tensor& output, const Tensor& input, const Normalization& norm,
                      const Tensor& weight, const Tensor& bias, const FusedActivation& activation) {
  const kernels::View3 x = detail::input_view(input);
  detail::check_normalization(norm, x.C);
  detail::check_param(weight, "weight", x.C, input.dtype());
  detail::check_param(bias, "bias", x.C, input.dtype());
  detail::check_params_agree({{&weight, "weight"}, {&bias, "bias"}});
  detail::check_activation(activation);
  step::apply(output, input, x, norm, weight, bias, activation);
}

Tensor batch_norm_apply(const Tensor& input, const Normalization& norm, const Tensor& weight,
                        const Tensor& bias, const FusedActivation& activation) {
  Tensor output;
  batch_norm_apply(output, input, norm, weight, bias, activation);
  return output;
}

// torch.nn.functional.batch_norm over the positions of @p part (every one, or the valid ones).
static Tensor batch_norm_over(const Tensor& input, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& weight, const Tensor& bias,
                              bool training, double momentum, double eps,
                              const FusedActivation& activation, const detail::Partition& part) {
  const kernels::View3 x = detail::input_view(input);
  if (part.valid != nullptr) part.valid->check_fits(input.sizes());
  detail::check_eps(eps);
  detail::check_momentum(momentum);
  detail::check_activation(activation);
  detail::check_param(weight, "weight", x.C, input.dtype());
  detail::check_param(bias, "bias", x.C, input.dtype());
  if (running_mean.defined() != running_var.defined()) {
    throw Error("running_mean and running_var must be both defined or both undefined");
  }
  const bool tracking = running_mean.defined();
  detail::check_param(running_mean, "running_mean", x.C, input.dtype());
  detail::check_param(running_var, "running_var", x.C, input.dtype());
  detail::check_params_agree({{&weight, "weight"},
                              {&bias, "bias"},
                              {&running_mean, "running_mean"},
                              {&running_var, "running_var"}});
  Normalization norm;
  Tensor output;
  if (!training) {
    if (!tracking) throw Error("running_mean and running_var must be defined in evaluation mode");
    step::normalization_from_running(norm, running_mean, running_var, eps);
    step::apply(output, input, x, {&norm, 1}, weight, bias, activation, part);
    return output;
  }
  if (part.valid == nullptr) detail::check_batch_size(x, input.sizes());
  if (tracking) {  // updated in place after the output is written
    detail::check_writable(running_mean, "running_mean");
    detail::check_writable(running_var, "running_var");
  }
  if (part.valid != nullptr && part.valid->count() < 2) {
    throw Error(part.valid->count() == 1
                    ? "Expected more than 1 value per channel when training, got 1 valid value "
                      "per channel (input size " +
                          format_shape(input.sizes()) + ")"
                    : "batch_norm: expected at least one valid position (lengths or mask) for "
                      "batch statistics, got none (input size " +
                          format_shape(input.sizes()) + ")");
  }
  if (x.count() == 0) return Tensor::empty(input.sizes(), input.dtype());
  BatchStats stats;
  step::batch_stats(stats, x, part, 0);
  step::normalization_from_batch(norm, stats, eps);
  step::apply(output, input, x, {&norm, 1}, weight, bias, activation, part);
  if (tracking) step::update_running_stats(running_mean, running_var, stats, momentum);
  return output;
}

Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps, const FusedActivation& activation) {
  return batch_norm_over(input, running_mean, running_var, weight, bias, training, momentum, eps,
                         activation, {});
}

Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps, const ValidPositions& valid, const FusedActivation& activation) {
  return batch_norm_over(input, running_mean, running_var, weight, bias, training, momentum, eps,
                         activation, {&valid, {}});
}

BatchStats batch_stats(const Tensor& input, const ValidPositions& valid) {
  const kernels::View3 x = detail::input_view(input);
  valid.check_fits(input.sizes());
  BatchStats stats;
  step::batch_stats(stats, x, {&valid, {}}, 0);
  return stats;
}

Tensor batch_norm_apply(const Tensor& input, const Normalization& norm, const Tensor& weight,
                        const Tensor& bias, const ValidPositions& valid,
                        const FusedActivation& activation) {
  const kernels::View3 x = detail::input_view(input);
  valid.check_fits(input.sizes());
  detail::check_normalization(norm, x.C);
  detail::check_param(weight, "weight", x.C, input.dtype());
  detail::check_param(bias, "bias", x.C, input.dtype());
  detail::check_params_agree({{&weight, "weight"}, {&bias, "bias"}});
  detail::check_activation(activation);
  Tensor output;
  step::apply(output, input, x, {&norm, 1}, weight, bias, activation, {&valid, {}});
  return output;
}

}  // namespace bn1d
