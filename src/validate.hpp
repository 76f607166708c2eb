// SPDX-License-Identifier: MIT
// Argument checks shared by the functional API and the module: every public entry point
// validates here once, then hands plain views to the kernels.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "bn1d/batch_norm.hpp"
#include "kernels/view.hpp"

namespace bn1d::detail {

/// Checks that @p input is a defined floating (N, C) or (N, C, L) tensor and returns its 3-D
/// view. Errors use PyTorch's text: "expected 2D or 3D input (got 4D input)".
kernels::View3 input_view(const Tensor& input, const char* name = "input");

/// True for the dtypes BatchNorm1d computes with: float32, float64, bfloat16, float16.
bool is_floating(DType dtype);
/// True for bfloat16 and float16.
bool is_16bit(DType dtype);
/// Checks is_floating(@p dtype): "@p name: expected dtype float32, float64, bfloat16 or float16,
/// got int64".
void check_floating_dtype(DType dtype, std::string_view name);

/// Whether parameters and running statistics of dtype @p param go with an input of dtype
/// @p input: the same dtype, or float32/float64 for a 16-bit input (mixed precision, as torch).
bool param_dtype_fits(DType param, DType input);
/// The parameter dtypes that go with @p input, for messages: "bfloat16, float32 or float64".
std::string param_dtypes_for(DType input);
/// Checks that @p t is undefined or a {C} tensor whose dtype fits @p input (param_dtype_fits).
void check_param(const Tensor& t, std::string_view name, int64_t C, DType input);
/// Checks that the defined tensors of @p params (tensor, name) share one dtype.
void check_params_agree(std::initializer_list<std::pair<const Tensor*, const char*>> params);

/// The output view of a result tensor made by reuse_or_allocate_like().
kernels::Out3 output_view(const Tensor& out);

/// Checks that @p t is defined, of shape {C} and of @p dtype; @p name + @p field names it in the
/// message (built only on failure, so that the check allocates nothing).
void check_channel_tensor(const Tensor& t, std::string_view name, int64_t C, DType dtype,
                          std::string_view field = {});

/// Checks that @p t is a contiguous float64 {C} statistics tensor.
void check_stat_tensor(const Tensor& t, std::string_view name, int64_t C,
                       std::string_view field = {});

/// Checks that @p other has the sizes and dtype of @p input.
void check_same_shape(const Tensor& other, const char* other_name, const Tensor& input);

/// eps must be finite and ≥ 0.
void check_eps(double eps);

/// momentum must be finite and in [0, 1].
void check_momentum(double momentum);

/// activation.kind must be one of Activation's values and activation.negative_slope finite.
void check_activation(const FusedActivation& activation);

/// PyTorch's "Expected more than 1 value per channel when training, got input size [1, 100]"
/// when N·L == 1 (@p x: the view of an input of @p sizes) and batch statistics are needed.
void check_batch_size(const kernels::View3& x, const Shape& sizes);

/// A float64 {C} tensor of zeros, the type of every per-channel statistic.
Tensor stat_tensor(int64_t C);

/// Copies @p value into @p dst in place when @p dst already has its sizes and dtype (so views of
/// the module's storage stay valid), else makes @p dst a copy of @p value.
void assign_channel_tensor(Tensor& dst, const Tensor& value);

/// Checks that @p norm holds float64 {C} mean and invstd.
void check_normalization(const Normalization& norm, int64_t C);

}  // namespace bn1d::detail
