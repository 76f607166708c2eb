// SPDX-License-Identifier: MIT
// The storage types of the kernels (float, double, BFloat16, Float16) one value at a time: exact
// widening to float64 and one rounding back, and the dispatch from a DType to its type.
#pragma once

#include <type_traits>

#include "bn1d/half.hpp"
#include "bn1d/tensor.hpp"

namespace bn1d::kernels {

/// True for the 16-bit storage types, which the kernels compute with in float64.
template <class T>
constexpr bool kIs16Bit = std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>;

/// @p v as a float64 (exact for every storage type).
template <class T>
inline double widen(T v) {
  if constexpr (kIs16Bit<T>)
    return to_double(v);
  else
    return static_cast<double>(v);
}

/// @p v rounded once to T (to nearest, ties to even; ±inf beyond T's range).
template <class T>
inline T narrow(double v) {
  if constexpr (std::is_same_v<T, BFloat16>)
    return to_bfloat16(v);
  else if constexpr (std::is_same_v<T, Float16>)
    return to_float16(v);
  else
    return static_cast<T>(v);
}

/// f.template operator()<T>() with T the storage type of the floating @p dtype.
template <class F>
inline auto with_storage(DType dtype, const F& f) {
  switch (dtype) {
    case DType::Float32:
      return f.template operator()<float>();
    case DType::BFloat16:
      return f.template operator()<BFloat16>();
    case DType::Float16:
      return f.template operator()<Float16>();
    default:
      return f.template operator()<double>();
  }
}

}  // namespace bn1d::kernels
