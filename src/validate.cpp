// SPDX-License-Identifier: MIT
#include "validate.hpp"

#include <cmath>

#include "format.hpp"

namespace bn1d::detail {

bool is_floating(DType dtype) { return dtype != DType::Int64; }

bool is_16bit(DType dtype) { return dtype == DType::BFloat16 || dtype == DType::Float16; }

void check_floating_dtype(DType dtype, std::string_view name) {
  if (is_floating(dtype)) return;
  throw Error(std::string(name) + ": expected dtype float32, float64, bfloat16 or float16, got " +
              dtype_name(dtype));
}

bool param_dtype_fits(DType param, DType input) {
  return param == input ||
         (is_16bit(input) && (param == DType::Float32 || param == DType::Float64));
}

std::string param_dtypes_for(DType input) {
  const std::string own = dtype_name(input);
  return is_16bit(input) ? own + ", float32 or float64" : own;
}

void check_param(const Tensor& t, std::string_view name, int64_t C, DType input) {
  if (!t.defined()) return;
  if (t.dim() == 1 && t.sizes()[0] == C && param_dtype_fits(t.dtype(), input)) return;
  throw Error(std::string(name) + ": expected a " + param_dtypes_for(input) + " tensor of shape [" +
              std::to_string(C) + "] (one value per channel, for a " + dtype_name(input) +
              " input), got a " + dtype_name(t.dtype()) + " tensor of shape " +
              format_shape(t.sizes()));
}

void check_params_agree(std::initializer_list<std::pair<const Tensor*, const char*>> params) {
  const std::pair<const Tensor*, const char*>* first = nullptr;
  for (const auto& param : params) {
    if (!param.first->defined()) continue;
    if (first == nullptr) {
      first = &param;
    } else if (param.first->dtype() != first->first->dtype()) {
      throw Error(std::string(param.second) + ": expected the dtype of " + first->second + " (" +
                  dtype_name(first->first->dtype()) + "), got " + dtype_name(param.first->dtype()));
    }
  }
}

kernels::View3 input_view(const Tensor& input, const char* name) {
  if (!input.defined()) throw Error(std::string(name) + ": expected a defined tensor");
  if (input.dim() != 2 && input.dim() != 3) {
    throw Error("expected 2D or 3D input (got " + std::to_string(input.dim()) + "D input)");
  }
  check_floating_dtype(input.dtype(), name);
  kernels::View3 v;
  v.data = input.raw_data();
  v.dtype = input.dtype();
  v.N = input.sizes()[0];
  v.C = input.sizes()[1];
  v.sN = input.strides()[0];
  v.sC = input.strides()[1];
  v.L = input.dim() == 3 ? input.sizes()[2] : 1;
  v.sL = input.dim() == 3 ? input.strides()[2] : 0;
  int64_t count = 0;  // N·L can overflow only when C == 0 (numel is checked at construction)
  if (__builtin_mul_overflow(v.N, v.L, &count)) {
    throw Error(std::string(name) + ": sizes " + format_shape(input.sizes()) +
                " give more values per channel than int64 holds");
  }
  return v;
}

kernels::Out3 output_view(const Tensor& out) {
  kernels::Out3 o;
  o.data = out.raw_data();
  o.sN = out.strides()[0];
  o.sC = out.strides()[1];
  o.sL = out.dim() == 3 ? out.strides()[2] : 0;
  return o;
}

void check_channel_tensor(const Tensor& t, std::string_view name, int64_t C, DType dtype,
                          std::string_view field) {
  if (t.defined() && t.dim() == 1 && t.sizes()[0] == C && t.dtype() == dtype) return;
  const std::string who = std::string(name) + std::string(field);
  if (!t.defined())
    throw Error(who + ": expected a defined tensor of shape [" + std::to_string(C) + "]");
  throw Error(who + ": expected a " + dtype_name(dtype) + " tensor of shape [" + std::to_string(C) +
              "] (one value per channel), got a " + dtype_name(t.dtype()) + " tensor of shape " +
              format_shape(t.sizes()));
}

void check_stat_tensor(const Tensor& t, std::string_view name, int64_t C, std::string_view field) {
  check_channel_tensor(t, name, C, DType::Float64, field);
  if (C > 1 && t.strides()[0] != 1) {  // read as plain arrays
    throw Error(std::string(name) + std::string(field) +
                ": expected a contiguous tensor (stride 1), got stride " +
                std::to_string(t.strides()[0]));
  }
}

void check_same_shape(const Tensor& other, const char* other_name, const Tensor& input) {
  if (!other.defined() || other.sizes() != input.sizes() || other.dtype() != input.dtype()) {
    throw Error(std::string(other_name) + ": expected a " + dtype_name(input.dtype()) +
                " tensor of size " + format_shape(input.sizes()) + " (the input's), got " +
                (other.defined() ? std::string("a ") + dtype_name(other.dtype()) +
                                       " tensor of size " + format_shape(other.sizes())
                                 : std::string("an undefined tensor")));
  }
}

void check_eps(double eps) {
  if (!std::isfinite(eps) || eps < 0) {
    throw Error("eps: expected a finite value >= 0, got " + python_float_repr(eps));
  }
}

void check_momentum(double momentum) {
  if (!std::isfinite(momentum) || momentum < 0 || momentum > 1) {
    throw Error("momentum: expected a value in [0, 1], got " + python_float_repr(momentum));
  }
}

void check_activation(const FusedActivation& activation) {
  switch (activation.kind) {
    case Activation::None:
    case Activation::ReLU:
    case Activation::LeakyReLU:
      break;
    default:
      throw Error(
          "activation: expected Activation::None, Activation::ReLU or "
          "Activation::LeakyReLU, got the value " +
          std::to_string(static_cast<int>(activation.kind)));
  }
  if (!std::isfinite(activation.negative_slope)) {
    throw Error("negative_slope: expected a finite value, got " +
                python_float_repr(activation.negative_slope));
  }
}

void check_batch_size(const kernels::View3& x, const Shape& sizes) {
  if (x.count() == 1) {
    throw Error("Expected more than 1 value per channel when training, got input size " +
                format_shape(sizes));
  }
}

Tensor stat_tensor(int64_t C) { return Tensor::zeros({C}, DType::Float64); }

void assign_channel_tensor(Tensor& dst, const Tensor& value) {
  if (dst.defined() && !dst.is_read_only() && dst.sizes() == value.sizes() &&
      dst.dtype() == value.dtype()) {
    dst.copy_from(value);
  } else {
    dst = value.clone();
  }
}

void check_normalization(const Normalization& norm, int64_t C) {
  check_stat_tensor(norm.mean, "norm.mean", C);
  check_stat_tensor(norm.invstd, "norm.invstd", C);
}

}  // namespace bn1d::detail
