// SPDX-License-Identifier: MIT
// Argument checks shared by the functional API and the module: every public entry point
// validates here once, then hands plain views to the kernels.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bn1d/batch_norm.hpp"
#include "kernels/view.hpp"

namespace bn1d::detail {

/// Checks that @p input is a defined float32/float64 (N, C) or (N, C, L) tensor and returns its
/// 3-D view. Errors use PyTorch's text: "expected 2D or 3D input (got 4D input)".
kernels::View3 input_view(const Tensor& input, const char* name = "input");

/// Checks that @p dtype is one BatchNorm1d computes in (float32, float64): the 16-bit dtypes
/// have no kernels yet. "@p name: expected dtype float32 or float64, got bfloat16".
void check_compute_dtype(DType dtype, std::string_view name);

/// The output view of a result tensor made by reuse_or_allocate_like().
kernels::Out3 output_view(const Tensor& out);

/// Checks that @p t is defined, of shape {C} and of @p dtype; @p name + @p field names it in the
/// message (built only on failure, so that the check allocates nothing).
void check_channel_tensor(const Tensor& t, std::string_view name, int64_t C, DType dtype,
                          std::string_view field = {});

/// Checks that @p t is a float64 {C} statistics tensor.
void check_stat_tensor(const Tensor& t, std::string_view name, int64_t C,
                       std::string_view field = {});

/// Checks that @p other has the sizes and dtype of @p input.
void check_same_shape(const Tensor& other, const char* other_name, const Tensor& input);

/// eps must be finite and ≥ 0.
void check_eps(double eps);

/// momentum must be finite and in [0, 1].
void check_momentum(double momentum);

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
