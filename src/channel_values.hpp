// SPDX-License-Identifier: MIT
// Helpers for per-channel ({C}) tensors and result buffers, shared by the functional forward and
// backward.
#pragma once

#include <cstddef>
#include <initializer_list>

#include "bn1d/tensor.hpp"
#include "validate.hpp"

namespace bn1d::detail {

inline const double* f64(const Tensor& t) { return t.data<double>(); }
inline double* f64_mut(const Tensor& t) { return t.data<double>(); }

/// Value c of a {C} float32/float64 tensor (any stride) as float64; @p fallback when @p t is
/// undefined (no affine parameters).
inline double channel_value(const Tensor& t, int64_t c, double fallback) {
  if (!t.defined()) return fallback;
  const int64_t off = c * t.strides()[0];
  return t.dtype() == DType::Float32 ? t.data<float>()[off] : t.data<double>()[off];
}

/// Writes @p v into element c of a {C} float32/float64 tensor (any stride), rounding once.
inline void store_channel_value(const Tensor& t, int64_t c, double v) {
  const int64_t off = c * t.strides()[0];
  if (t.dtype() == DType::Float32) t.data<float>()[off] = static_cast<float>(v);
  else t.data<double>()[off] = v;
}

/// Checks an optional affine parameter: undefined, or {C} of @p dtype.
void check_optional_param(const Tensor& t, const char* name, int64_t C, DType dtype);

/// Makes @p t a contiguous tensor of @p sizes and @p dtype, keeping its storage when it already
/// is one and overlaps none of @p avoid (inputs the result must not alias).
void reuse_or_allocate(Tensor& t, const Shape& sizes, DType dtype,
                       std::initializer_list<const Tensor*> avoid = {});
/// reuse_or_allocate() for a {C} tensor, without building a Shape when the tensor is reused.
void reuse_or_allocate(Tensor& t, int64_t C, DType dtype,
                       std::initializer_list<const Tensor*> avoid = {});

/// Per-thread scratch of float64 values: @p slot (0 … 3) holds at least @p n values. The storage
/// grows and is kept, so steady-state calls allocate nothing.
double* scratch(int slot, std::size_t n);

}  // namespace bn1d::detail
