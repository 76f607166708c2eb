// SPDX-License-Identifier: MIT
// The per-channel parameters of the elementwise kernels (normalize, backward_input): one block of
// columns of C values in the input's dtype T, written by update_params (simd.cpp) as ParamBlock
// says and read by the kernels through the named columns of NormalizeColumns and
// BackwardInputColumns. The float64 mean is split into mean_hi = T(mean) and
// mean_lo = T(mean − mean_hi), so that the kernels compute x − mean in T without losing the
// float64 mean's precision:
//   unfolded: [mean_hi | mean_lo | coefficients...]
//   folded:   [mean_hi | coefficients...], the last coefficient with − mean_lo · coefficient[fold]
//             added in float64 before its one rounding (docs/math.md): a load and a subtraction
//             less per vector.
#pragma once

#include <cstdint>

namespace bn1d::kernels {

/// The most coefficients an op has (backward_input with an activation: a, b, k, scale, shift).
constexpr int64_t kMaxCoefficients = 5;

/// The column of coefficient k: after mean_hi and, unfolded, mean_lo.
constexpr int64_t coefficient_column(bool folded, int64_t k) { return (folded ? 1 : 2) + k; }

/// A parameter block's form, for its writer (update_params): C values per column.
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
    return P + coefficient_column(folded(), k) * C;
  }
};

/// Whether a kernel takes the folded block: the cols kernels whose output stays in cache.
/// Streamed outputs keep mean_lo: docs/tuning.md#folded-mean-lo.
inline bool folds_mean_lo(bool cols_kernel, bool stream) { return cols_kernel && !stream; }

/// A block of the form kFolded, for its readers: channel c's value of each column, addressed
/// from the block's start (one base pointer: docs/tuning.md#param-columns).
template <class T, bool kFolded>
struct ParamColumns {
  const T* P;
  int64_t C;
  // Each column as a pointer to channel c's value (for vector loads) and as that value.
  const T* mean_hi(int64_t c) const { return P + c; }
  const T* mean_lo(int64_t c) const {
    static_assert(!kFolded, "a folded block has no mean_lo");
    return P + C + c;
  }
  T mean_hi_at(int64_t c) const { return P[c]; }
  T mean_lo_at(int64_t c) const {
    static_assert(!kFolded, "a folded block has no mean_lo");
    return P[C + c];
  }
};

/// y = scale · (x − mean) + shift; folded, shift − mean_lo · scale.
inline ParamBlock normalize_block(int64_t C, bool folded) { return {C, 2, folded ? 0 : -1}; }
template <class T, bool kFolded>
struct NormalizeColumns : ParamColumns<T, kFolded> {
  static constexpr int64_t kScale = coefficient_column(kFolded, 0);
  static constexpr int64_t kShift = coefficient_column(kFolded, 1);
  const T* scale(int64_t c) const { return this->P + kScale * this->C + c; }
  const T* shift(int64_t c) const { return this->P + kShift * this->C + c; }
  T scale_at(int64_t c) const { return this->P[kScale * this->C + c]; }
  T shift_at(int64_t c) const { return this->P[kShift * this->C + c]; }
};

/// dx = a · dy + b · (x − mean) + k; folded, k − mean_lo · b.
inline ParamBlock backward_input_block(int64_t C, bool folded) { return {C, 3, folded ? 1 : -1}; }
/// With an activation (unfolded), dy gated at z = ((x − mean_hi) − mean_lo) · scale + shift:
/// a, b, k, then scale and shift.
inline ParamBlock backward_input_act_block(int64_t C) { return {C, 5, -1}; }
template <class T, bool kFolded>
struct BackwardInputColumns : ParamColumns<T, kFolded> {
  static constexpr int64_t kA = coefficient_column(kFolded, 0);
  static constexpr int64_t kB = coefficient_column(kFolded, 1);
  static constexpr int64_t kK = coefficient_column(kFolded, 2);
  const T* a(int64_t c) const { return this->P + kA * this->C + c; }
  const T* b(int64_t c) const { return this->P + kB * this->C + c; }
  const T* k(int64_t c) const { return this->P + kK * this->C + c; }
  T a_at(int64_t c) const { return this->P[kA * this->C + c]; }
  T b_at(int64_t c) const { return this->P[kB * this->C + c]; }
  T k_at(int64_t c) const { return this->P[kK * this->C + c]; }
  // backward_input_act_block's activation columns.
  static constexpr int64_t kScale = coefficient_column(kFolded, 3);
  static constexpr int64_t kShift = coefficient_column(kFolded, 4);
  const T* scale(int64_t c) const { return this->P + kScale * this->C + c; }
  const T* shift(int64_t c) const { return this->P + kShift * this->C + c; }
  T scale_at(int64_t c) const { return this->P[kScale * this->C + c]; }
  T shift_at(int64_t c) const { return this->P[kShift * this->C + c]; }
};

}  // namespace bn1d::kernels
