// SPDX-License-Identifier: MIT
// The per-channel parameters of the elementwise kernels (normalize, backward_input): one block of
// columns of C values in the input's dtype T, written by update_params (simd.cpp) and read by the
// kernels through named column pointers. The float64 mean is split into mean_hi = T(mean) and
// mean_lo = T(mean − mean_hi), so that the kernels compute x − mean in T without losing the
// float64 mean's precision:
//   unfolded: [mean_hi | mean_lo | coefficients...]
//   folded:   [mean_hi | coefficients...], the last coefficient with − mean_lo · coefficient[fold]
//             added in float64 before its one rounding (docs/math.md): a load and a subtraction
//             less per vector.
#pragma once

#include <cstdint>

namespace bn1d::kernels {

/// The most coefficients an op has (backward_input: a, b, k).
constexpr int64_t kMaxCoefficients = 3;

/// Where each column of a parameter block lies, from the block's start P.
struct ParamBlock {
  int64_t C = 0;             ///< values per column: the input's channels
  int64_t coefficients = 0;  ///< columns after the mean's
  int64_t fold = -1;  ///< folded: the coefficient that multiplies (x − mean); −1: unfolded

  bool folded() const { return fold >= 0; }
  /// Values of the unfolded form: storage of this size holds either form.
  int64_t capacity() const { return (2 + coefficients) * C; }
  template <class T>
  T* mean_hi(T* P) const {
    return P;
  }
  /// nullptr when folded.
  template <class T>
  T* mean_lo(T* P) const {
    return folded() ? nullptr : P + C;
  }
  template <class T>
  T* coefficient(T* P, int64_t k) const {
    return P + (first_coefficient() + k) * C;
  }

 private:
  int64_t first_coefficient() const { return folded() ? 1 : 2; }
};

/// Whether a kernel takes the folded block: the cols kernels whose output stays in cache.
/// Streamed outputs keep mean_lo: docs/tuning.md#folded-mean-lo.
inline bool folds_mean_lo(bool cols_kernel, bool stream) { return cols_kernel && !stream; }

/// y = s · (x − mean) + b.
inline ParamBlock normalize_block(int64_t C, bool folded) { return {C, 2, folded ? 0 : -1}; }
template <class T>
struct NormalizeParams {
  const T *mean_hi, *mean_lo, *scale, *shift;  ///< shift: b, or b − mean_lo · s when folded
  static NormalizeParams at(const T* P, const ParamBlock& block) {
    return {block.mean_hi(P), block.mean_lo(P), block.coefficient(P, 0), block.coefficient(P, 1)};
  }
};

/// dx = a · dy + b · (x − mean) + k.
inline ParamBlock backward_input_block(int64_t C, bool folded) { return {C, 3, folded ? 1 : -1}; }
template <class T>
struct BackwardInputParams {
  const T *mean_hi, *mean_lo, *a, *b, *k;  ///< k: k, or k − mean_lo · b when folded
  static BackwardInputParams at(const T* P, const ParamBlock& block) {
    return {block.mean_hi(P), block.mean_lo(P), block.coefficient(P, 0), block.coefficient(P, 1),
            block.coefficient(P, 2)};
  }
};

}  // namespace bn1d::kernels
