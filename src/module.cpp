// SPDX-License-Identifier: MIT
// BatchNorm1d: construction, copies, resets and the text form. The training step (forward,
// backward, infer) is in training_step.cpp, the state dict in module_state.cpp.
#include "bn1d/module.hpp"

#include <ostream>

#include "format.hpp"
#include "options_repr.hpp"
#include "validate.hpp"

namespace bn1d {
namespace {

void check_options(const BatchNorm1dOptions& o) {
  if (o.num_features() < 1) {
    throw Error("num_features: expected a positive channel count, got " +
                std::to_string(o.num_features()));
  }
  detail::check_eps(o.eps());
  if (o.momentum()) detail::check_momentum(*o.momentum());
  detail::check_floating_dtype(o.dtype(), "dtype");
  detail::check_activation(o.fused_activation());
}

// A float64 {C} normalization buffer, so that the forwards that fill it allocate nothing.
Normalization normalization_buffer(int64_t C) {
  return {Tensor::zeros({C}, DType::Float64), Tensor::zeros({C}, DType::Float64)};
}

}  // namespace

BatchNorm1d::BatchNorm1d(int64_t num_features) : BatchNorm1d(BatchNorm1dOptions(num_features)) {}

BatchNorm1d::BatchNorm1d(const BatchNorm1dOptions& options) : options_(options) {
  check_options(options_);
  const int64_t C = options_.num_features();
  if (options_.affine()) {
    weight_ = Tensor::ones({C}, options_.dtype());
    bias_ = Tensor::zeros({C}, options_.dtype());
  }
  if (options_.track_running_stats()) {
    running_mean_ = Tensor::zeros({C}, options_.dtype());
    running_var_ = Tensor::ones({C}, options_.dtype());
  }
  saved_norm_.push_back(normalization_buffer(C));
  next_norm_.push_back(normalization_buffer(C));
}

void BatchNorm1d::check_not_moved_from() const {
  if (moved_from_.value) throw Error("BatchNorm1d: use of a moved-from module");
}

BatchNorm1d::BatchNorm1d(const BatchNorm1d& other)
    : options_((other.check_not_moved_from(), other.options_)),
      training_(other.training_),
      weight_(other.weight_.clone()),
      bias_(other.bias_.clone()),
      running_mean_(other.running_mean_.clone()),
      running_var_(other.running_var_.clone()),
      num_batches_tracked_(other.num_batches_tracked_),
      saved_input_(other.saved_input_),
      next_norm_{normalization_buffer(other.options_.num_features())},
      saved_batch_statistics_(other.saved_batch_statistics_),
      saved_valid_(other.saved_valid_),
      saved_masked_(other.saved_masked_),
      saved_bounds_(other.saved_bounds_) {
  for (const Normalization& norm : other.saved_norm_)
    saved_norm_.push_back({norm.mean.clone(), norm.invstd.clone()});
}

BatchNorm1d& BatchNorm1d::operator=(const BatchNorm1d& other) {
  if (this != &other) *this = BatchNorm1d(other);
  return *this;
}

// Makes @p dst hold the values of @p fresh (a new tensor of the module's {C} shape and dtype):
// in place when @p dst can take them (views of the module's tensors stay valid), else by taking
// @p fresh. Allocates nothing, so that a reset can prepare every value before changing any.
static void commit_channel_values(Tensor& dst, Tensor& fresh) noexcept {
  if (dst.defined() && !dst.is_read_only() && dst.sizes() == fresh.sizes() &&
      dst.dtype() == fresh.dtype()) {
    try {
      dst.copy_from(fresh);  // fresh overlaps nothing: a plain copy, which cannot throw
      return;
    } catch (...) {
    }
  }
  dst = std::move(fresh);
}

void BatchNorm1d::reset_running_stats() {
  check_not_moved_from();
  const int64_t C = options_.num_features();
  Tensor mean, var;
  if (options_.track_running_stats()) {  // every allocation before the first change
    mean = Tensor::zeros({C}, options_.dtype());
    var = Tensor::ones({C}, options_.dtype());
    commit_channel_values(running_mean_, mean);
    commit_channel_values(running_var_, var);
  }
  num_batches_tracked_ = 0;
}

void BatchNorm1d::reset_parameters() {
  check_not_moved_from();
  const int64_t C = options_.num_features();
  Tensor mean, var, weight, bias;
  if (options_.track_running_stats()) {  // every allocation before the first change
    mean = Tensor::zeros({C}, options_.dtype());
    var = Tensor::ones({C}, options_.dtype());
  }
  if (options_.affine()) {
    weight = Tensor::ones({C}, options_.dtype());
    bias = Tensor::zeros({C}, options_.dtype());
  }
  if (options_.track_running_stats()) {
    commit_channel_values(running_mean_, mean);
    commit_channel_values(running_var_, var);
  }
  num_batches_tracked_ = 0;
  if (options_.affine()) {
    commit_channel_values(weight_, weight);
    commit_channel_values(bias_, bias);
  }
}

std::ostream& detail::write_options(std::ostream& os, const BatchNorm1dOptions& o) {
  os << "(" << o.num_features() << ", eps=" << python_float_repr(o.eps())
     << ", momentum=" << (o.momentum() ? python_float_repr(*o.momentum()) : "None")
     << ", affine=" << (o.affine() ? "true" : "false")
     << ", track_running_stats=" << (o.track_running_stats() ? "true" : "false");
  return write_activation(os, o) << ")";
}

std::ostream& detail::write_activation(std::ostream& os, const BatchNorm1dOptions& o) {
  if (o.activation() == Activation::None) return os;
  os << ", activation=" << activation_name(o.activation());
  if (o.activation() == Activation::LeakyReLU)
    os << ", negative_slope=" << python_float_repr(o.negative_slope());
  return os;
}

std::ostream& operator<<(std::ostream& os, const BatchNorm1d& module) {
  return detail::write_options(os << "BatchNorm1d", module.options());
}

}  // namespace bn1d
