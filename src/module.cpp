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
  if (o.dtype() != DType::Float32 && o.dtype() != DType::Float64) {
    throw Error(std::string("dtype: expected float32 or float64, got ") + dtype_name(o.dtype()));
  }
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
  saved_norm_ = normalization_buffer(C);
  next_norm_ = normalization_buffer(C);
}

BatchNorm1d::BatchNorm1d(const BatchNorm1d& other)
    : options_(other.options_),
      training_(other.training_),
      weight_(other.weight_.clone()),
      bias_(other.bias_.clone()),
      running_mean_(other.running_mean_.clone()),
      running_var_(other.running_var_.clone()),
      num_batches_tracked_(other.num_batches_tracked_),
      saved_input_(other.saved_input_),
      saved_norm_{other.saved_norm_.mean.clone(), other.saved_norm_.invstd.clone()},
      next_norm_(normalization_buffer(other.options_.num_features())),
      saved_batch_statistics_(other.saved_batch_statistics_) {}

BatchNorm1d& BatchNorm1d::operator=(const BatchNorm1d& other) {
  if (this != &other) *this = BatchNorm1d(other);
  return *this;
}

void BatchNorm1d::reset_running_stats() {
  if (options_.track_running_stats()) {
    const int64_t C = options_.num_features();
    detail::assign_channel_tensor(running_mean_, Tensor::zeros({C}, options_.dtype()));
    detail::assign_channel_tensor(running_var_, Tensor::ones({C}, options_.dtype()));
  }
  num_batches_tracked_ = 0;
}

void BatchNorm1d::reset_parameters() {
  reset_running_stats();
  if (options_.affine()) {
    const int64_t C = options_.num_features();
    detail::assign_channel_tensor(weight_, Tensor::ones({C}, options_.dtype()));
    detail::assign_channel_tensor(bias_, Tensor::zeros({C}, options_.dtype()));
  }
}

std::ostream& detail::write_options(std::ostream& os, const BatchNorm1dOptions& o) {
  return os << "(" << o.num_features() << ", eps=" << python_float_repr(o.eps())
            << ", momentum=" << (o.momentum() ? python_float_repr(*o.momentum()) : "None")
            << ", affine=" << (o.affine() ? "true" : "false")
            << ", track_running_stats=" << (o.track_running_stats() ? "true" : "false") << ")";
}

std::ostream& operator<<(std::ostream& os, const BatchNorm1d& module) {
  return detail::write_options(os << "BatchNorm1d", module.options());
}

}  // namespace bn1d
