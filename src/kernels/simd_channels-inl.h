// SPDX-License-Identifier: MIT
// SIMD kernels on per-channel {C} arrays: the coefficients computed between the passes over the
// tensor (running statistics, scales, gradient coefficients, the merge of partition results). A
// call of a small batch with many channels, e.g. (2, 2048), spends most of its time here.
// Every lane does the float64 operations of the scalar reference (kernels/reference.hpp) in the
// same order, without fused multiply-adds, and the leftover channels call the reference itself,
// so every target gives the reference's bits. Included once per Highway target by simd.cpp.
#if defined(BN1D_KERNELS_SIMD_CHANNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BN1D_KERNELS_SIMD_CHANNELS_INL_H_
#undef BN1D_KERNELS_SIMD_CHANNELS_INL_H_
#else
#define BN1D_KERNELS_SIMD_CHANNELS_INL_H_
#endif

#include <cstdint>

#include "hwy/highway.h"
#include "kernels/reference.hpp"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// out[c] = in[c] as float64 (exact), in contiguous storage of any floating dtype.
template <class T>
void to_f64(double* HWY_RESTRICT out, const T* HWY_RESTRICT in, int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  int64_t c = 0;
  for (; c + N <= C; c += N) hn::StoreU(LoadD(in + c), d, out + c);
  for (; c < C; ++c) out[c] = widen(in[c]);
}
void ToF64(double* out, const void* in, DType dtype, int64_t C) {
  with_storage(dtype, [&]<class T>() { to_f64(out, static_cast<const T*>(in), C); });
}

// out[c] = v[c] rounded once to T, out contiguous.
template <class T>
void from_f64(T* HWY_RESTRICT out, const double* HWY_RESTRICT v, int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  int64_t c = 0;
  for (; c + N <= C; c += N) StoreD(hn::LoadU(d, v + c), out + c);
  for (; c < C; ++c) out[c] = narrow<T>(v[c]);
}
void FromF64(void* out, DType dtype, const double* v, int64_t C) {
  with_storage(dtype, [&]<class T>() { from_f64(static_cast<T*>(out), v, C); });
}

// out[c] = a[c] · b[c].
void Multiply(double* HWY_RESTRICT out, const double* a, const double* b, int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  int64_t c = 0;
  for (; c + N <= C; c += N)
    hn::StoreU(hn::Mul(hn::LoadU(d, a + c), hn::LoadU(d, b + c)), d, out + c);
  for (; c < C; ++c) out[c] = a[c] * b[c];  // a product alone cannot be fused
}

// See reference::running_update.
void RunningUpdate(double* rmean, double* rvar, const double* mean, const double* m2,
                   double momentum, double unbias, int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const VD keep = hn::Set(d, 1.0 - momentum), m = hn::Set(d, momentum), u = hn::Set(d, unbias);
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    const VD new_mean = hn::Mul(m, hn::LoadU(d, mean + c));
    const VD new_var = hn::Mul(m, hn::Mul(hn::LoadU(d, m2 + c), u));
    hn::StoreU(hn::Add(hn::Mul(keep, hn::LoadU(d, rmean + c)), new_mean), d, rmean + c);
    hn::StoreU(hn::Add(hn::Mul(keep, hn::LoadU(d, rvar + c)), new_var), d, rvar + c);
  }
  reference::running_update(rmean + c, rvar + c, mean + c, m2 + c, momentum, unbias, C - c);
}

// See reference::backward_coefficients.
void BackwardCoefficients(double* a, double* b, double* k, const double* w, const double* invstd,
                          const double* sum_dy, const double* sum_dy_xmu, double n, int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const VD nv = hn::Set(d, n);
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    const VD inv = hn::LoadU(d, invstd + c);
    const VD g = w != nullptr ? hn::Mul(hn::LoadU(d, w + c), inv) : inv;
    hn::StoreU(g, d, a + c);
    if (sum_dy == nullptr) {
      hn::StoreU(hn::Zero(d), d, b + c);
      hn::StoreU(hn::Zero(d), d, k + c);
      continue;
    }
    const VD neg = hn::Neg(g);
    hn::StoreU(hn::Div(hn::Mul(neg, hn::LoadU(d, sum_dy + c)), nv), d, k + c);
    const VD t = hn::Mul(hn::Mul(hn::Mul(neg, inv), inv), hn::LoadU(d, sum_dy_xmu + c));
    hn::StoreU(hn::Div(t, nv), d, b + c);
  }
  reference::backward_coefficients(a + c, b + c, k + c, w != nullptr ? w + c : nullptr, invstd + c,
                                   sum_dy != nullptr ? sum_dy + c : nullptr,
                                   sum_dy != nullptr ? sum_dy_xmu + c : nullptr, n, C - c);
}

// See reference::merge_slot.
void MergeSlot(double* mean, double* m2, const double* part_mean, const double* part_m2, double wb,
               double wab, bool first, int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const VD wbv = hn::Set(d, wb), wabv = hn::Set(d, wab);
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    const VD old_mean = first ? hn::Zero(d) : hn::LoadU(d, mean + c);
    const VD old_m2 = first ? hn::Zero(d) : hn::LoadU(d, m2 + c);
    const VD delta = hn::Sub(hn::LoadU(d, part_mean + c), old_mean);
    hn::StoreU(hn::Add(old_mean, hn::Mul(delta, wbv)), d, mean + c);
    const VD spread = hn::Mul(hn::Mul(delta, delta), wabv);
    hn::StoreU(hn::Add(old_m2, hn::Add(hn::LoadU(d, part_m2 + c), spread)), d, m2 + c);
  }
  reference::merge_slot(mean + c, m2 + c, part_mean + c, part_m2 + c, wb, wab, first, C - c);
}

// See reference::add_slot.
void AddSlot(double* a, double* b, const double* part_a, const double* part_b, bool first,
             int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    const VD old_a = first ? hn::Zero(d) : hn::LoadU(d, a + c);
    const VD old_b = first ? hn::Zero(d) : hn::LoadU(d, b + c);
    hn::StoreU(hn::Add(old_a, hn::LoadU(d, part_a + c)), d, a + c);
    hn::StoreU(hn::Add(old_b, hn::LoadU(d, part_b + c)), d, b + c);
  }
  reference::add_slot(a + c, b + c, part_a + c, part_b + c, first, C - c);
}

// The first c with v[c] + eps < 0 or NaN (no variance), or C when there is none.
int64_t FirstNegativeSum(const double* v, double eps, int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const VD e = hn::Set(d, eps), zero = hn::Zero(d);
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    // Not (sum >= 0): true for a negative sum and for NaN, as the scalar tail below.
    const auto invalid = hn::Not(hn::Ge(hn::Add(hn::LoadU(d, v + c), e), zero));
    if (!hn::AllFalse(d, invalid))
      return c + static_cast<int64_t>(hn::FindKnownFirstTrue(d, invalid));
  }
  for (; c < C; ++c) {
    if (!(v[c] + eps >= 0)) return c;
  }
  return C;
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BN1D_KERNELS_SIMD_CHANNELS_INL_H_
