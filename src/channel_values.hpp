// SPDX-License-Identifier: MIT
// Helpers for per-channel ({C}) tensors and result buffers, shared by the functional forward and
// backward.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <vector>

#include "bn1d/tensor.hpp"
#include "kernels/element.hpp"
#include "validate.hpp"

namespace bn1d::detail {

inline const double* f64(const Tensor& t) { return t.data<double>(); }
inline double* f64_mut(const Tensor& t) { return t.data<double>(); }

/// Element access to a {C} floating tensor (any stride) in float64, resolved once: reads
/// give @p fallback for every channel when the tensor is undefined (no affine parameters).
class ChannelValues {
 public:
  ChannelValues(const Tensor& t, double fallback)
      : data_(static_cast<char*>(t.raw_data())),
        dtype_(t.dtype()),
        step_(t.defined() ? t.strides()[0] * static_cast<int64_t>(element_size(t.dtype())) : 0),
        fallback_(fallback) {}
  double operator[](int64_t c) const {
    if (data_ == nullptr) return fallback_;
    const char* p = data_ + c * step_;
    return kernels::with_storage(
        dtype_, [p]<class T>() { return kernels::widen(*reinterpret_cast<const T*>(p)); });
  }
  /// Writes element c, rounding once to the tensor's dtype.
  void set(int64_t c, double v) const {
    char* p = data_ + c * step_;
    kernels::with_storage(dtype_,
                          [p, v]<class T>() { *reinterpret_cast<T*>(p) = kernels::narrow<T>(v); });
  }

 private:
  char* data_;
  DType dtype_;
  int64_t step_;
  double fallback_;
};

/// out[c] = t[c] as float64 for a defined {C} float32/float64 tensor @p t (any stride).
void load_channels(double* out, const Tensor& t);
/// The values of a {C} float32/float64 tensor as float64: its own data when it is contiguous
/// float64, else converted into @p storage (grown as needed); nullptr when @p t is undefined.
const double* channel_f64(const Tensor& t, std::vector<double>& storage);
/// t[c] = v[c] for a {C} float32/float64 tensor @p t (any stride), rounding once to its dtype.
void store_channels(const Tensor& t, const double* v);

/// Tensors a result must not overlap (inputs of the call, results chosen before it).
using Avoid = std::initializer_list<const Tensor*>;

/// Whether @p a and @p b are defined, non-empty and their byte ranges intersect.
bool overlaps(const Tensor& a, const Tensor& b) noexcept;

/// Makes @p t a contiguous tensor of @p sizes and @p dtype, keeping its storage when it already
/// is one and overlaps none of @p avoid and @p also (inputs the result must not alias).
void reuse_or_allocate(Tensor& t, const Shape& sizes, DType dtype, Avoid avoid = {},
                       Avoid also = {});
/// reuse_or_allocate() for a {C} tensor, without building a Shape when the tensor is reused.
void reuse_or_allocate(Tensor& t, int64_t C, DType dtype, Avoid avoid = {}, Avoid also = {});

/// Makes @p out a result for @p input ((N, C) or (N, C, L)): kept when it has the input's sizes
/// and dtype, overlaps none of @p avoid and @p also, and is contiguous or has exactly the input's
/// strides with the input dense (e.g. a channels-last output for a channels-last input);
/// otherwise replaced by a new contiguous tensor.
void reuse_or_allocate_like(Tensor& out, const Tensor& input, Avoid avoid, Avoid also = {});

}  // namespace bn1d::detail
