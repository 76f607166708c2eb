// SPDX-License-Identifier: MIT
// Small helpers for per-channel ({C}) tensors shared by the functional forward and backward.
#pragma once

#include <vector>

#include "bn1d/tensor.hpp"
#include "validate.hpp"

namespace bn1d::detail {

inline const double* f64(const Tensor& t) { return t.data<double>(); }
inline double* f64_mut(const Tensor& t) { return t.data<double>(); }

/// Float64 copies of the values of a {C} float32/float64 tensor (any stride); @p fallback for
/// every channel when @p t is undefined (no affine parameters).
std::vector<double> channel_values(const Tensor& t, int64_t C, double fallback);

/// Writes @p v into a {C} float32/float64 tensor (any stride), rounding once.
void store_channel_values(const Tensor& t, const std::vector<double>& v);

/// Checks an optional affine parameter: undefined, or {C} of @p dtype.
void check_optional_param(const Tensor& t, const char* name, int64_t C, DType dtype);

}  // namespace bn1d::detail
