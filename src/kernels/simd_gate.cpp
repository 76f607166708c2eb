// SPDX-License-Identifier: MIT
// The gate tests of float32 channels (gate_interval.hpp) a vector of channels at a time, on the
// active Highway target: per channel the search of gate_interval.cpp costs tens of nanoseconds,
// as much as the gated sums of a few hundred rows. Here each lane guesses its interval's end at
// mean + (kActiveAbove − shift) / scale and checks it with z at the guess and its two neighbours,
// formed as every kernel forms z (ActChannel::input); lanes whose end is elsewhere, and zero
// scales, take the scalar search.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/simd_gate.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include <cstdint>
// clang-format on
#include "hwy/highway.h"
#include "kernels/gate_interval.hpp"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
namespace {

using DF = hn::Rebind<float, DD>;  // float32 lanes matching the float64 ones
using DI = hn::Rebind<int32_t, DD>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// Float32 values as their order among float32 values (gate_interval.cpp's index_of) and back.
HWY_INLINE VI IndexOf(VF v) {
  const DI di;
  const VI bits = hn::BitCast(di, v);
  const VI magnitude = hn::And(bits, hn::Set(di, 0x7FFFFFFF));
  return hn::IfThenElse(hn::Lt(bits, hn::Zero(di)), hn::Neg(magnitude), magnitude);
}
HWY_INLINE VF ValueAt(VI i) {
  const DI di;
  const VI negative = hn::Or(hn::Neg(i), hn::Set(di, INT32_MIN));
  return hn::BitCast(DF(), hn::IfThenElse(hn::Lt(i, hn::Zero(di)), negative, i));
}

// A vector of channels' z parameters, rounded as ActChannel::of rounds them.
struct Lanes {
  VF mean_hi, mean_lo, scale, shift;

  // Whether the gate acts at the values of indices i (in gate_interval's sense).
  HWY_INLINE hn::Mask<DF> In(Activation kind, VI i) const {
    const VF z = ActInput(hn::Sub(hn::Sub(ValueAt(i), mean_hi), mean_lo), scale, shift);
    return kind == Activation::ReLU ? hn::Le(z, hn::Zero(DF())) : hn::Gt(z, hn::Zero(DF()));
  }
};

}  // namespace

bool GateTestsF32(Activation kind, const double* mean, const double* scale, const double* shift,
                  int64_t C, uint64_t* keep, uint64_t* flip, double* max) {
  const DD dd;
  const DF df;
  const DI di;
  const hn::RebindToUnsigned<DD> du;
  const auto N = static_cast<int64_t>(hn::Lanes(dd));
  // The guesses' range: inside ±inf's indices, so that both neighbours of a guess are values.
  const VI guess_min = hn::Set(di, -0x7F800000 + 1), guess_max = hn::Set(di, 0x7F800000 - 1);
  HWY_ALIGN float fast_lanes[HWY_MAX_BYTES / sizeof(double)];
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    const VD m = hn::LoadU(dd, mean + c);
    const VF hi = ToT<float>(m);
    const Lanes ch{hi, ToT<float>(hn::Sub(m, hn::PromoteTo(dd, hi))),
                   ToT<float>(hn::LoadU(dd, scale + c)), ToT<float>(hn::LoadU(dd, shift + c))};
    const auto finite = hn::And(hn::And(hn::IsFinite(ch.mean_hi), hn::IsFinite(ch.mean_lo)),
                                hn::And(hn::IsFinite(ch.scale), hn::IsFinite(ch.shift)));
    if (!hn::AllTrue(df, finite)) return false;
    // The guess, from z's rounded parameters (kActiveAbove<float> is 0).
    const VD crossing =
        hn::Add(hn::Add(hn::PromoteTo(dd, ch.mean_hi), hn::PromoteTo(dd, ch.mean_lo)),
                hn::Div(hn::Neg(hn::PromoteTo(dd, ch.shift)), hn::PromoteTo(dd, ch.scale)));
    const VI g = hn::Min(hn::Max(IndexOf(ToT<float>(crossing)), guess_min), guess_max);
    // Upper intervals ([first, +inf]) for (ReLU, scale < 0) and (LeakyReLU, scale > 0): the
    // search is for the first index in it; else for the first index out of it.
    const auto negative = hn::Lt(ch.scale, hn::Zero(df));
    const auto upper = kind == Activation::ReLU ? negative : hn::Not(negative);
    const auto below = hn::Xor(ch.In(kind, hn::Sub(g, hn::Set(di, 1))), hn::Not(upper));
    const auto at = hn::Xor(ch.In(kind, g), hn::Not(upper));
    const auto after = hn::Xor(ch.In(kind, hn::Add(g, hn::Set(di, 1))), hn::Not(upper));
    const auto found = hn::Or(hn::AndNot(below, at), hn::AndNot(at, after));
    const auto fast = hn::AndNot(hn::Eq(ch.scale, hn::Zero(df)), found);
    const VI first = hn::Add(g, hn::IfThenZeroElse(hn::RebindMask(di, at), hn::Set(di, 1)));
    // Upper: −x ≤ −value(first); lower: x ≤ value(first − 1), the last index in it.
    const VF bound =
        hn::IfThenElse(upper, hn::Neg(ValueAt(first)), ValueAt(hn::Sub(first, hn::Set(di, 1))));
    const VF sign = hn::IfThenElseZero(upper, hn::Set(df, -0.0f));  // −0.0: the sign bit alone
    hn::StoreU(hn::Set(du, ~uint64_t{0}), du, keep + c);
    hn::StoreU(hn::BitCast(du, hn::PromoteTo(dd, sign)), du, flip + c);
    hn::StoreU(hn::PromoteTo(dd, bound), dd, max + c);
    if (hn::AllTrue(df, fast)) continue;
    hn::Store(hn::VecFromMask(df, fast), df, fast_lanes);
    for (int64_t j = 0; j < N; ++j) {
      if (fast_lanes[j] != 0.0f) continue;  // all bits set (a NaN) where fast, else 0
      if (!gate_tests(DType::Float32, kind, mean + c + j, scale + c + j, shift + c + j, 1,
                      keep + c + j, flip + c + j, max + c + j))
        return false;
    }
  }
  return gate_tests(DType::Float32, kind, mean + c, scale + c, shift + c, C - c, keep + c, flip + c,
                    max + c);
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "kernels/simd.hpp"

namespace bn1d::kernels::simd {

HWY_EXPORT(GateTestsF32);

bool gate_tests(DType dtype, Activation kind, const double* mean, const double* scale,
                const double* shift, int64_t C, uint64_t* keep, uint64_t* flip, double* max) {
  if (dtype != DType::Float32)
    return kernels::gate_tests(dtype, kind, mean, scale, shift, C, keep, flip, max);
  return HWY_DYNAMIC_DISPATCH(GateTestsF32)(kind, mean, scale, shift, C, keep, flip, max);
}

}  // namespace bn1d::kernels::simd
#endif  // HWY_ONCE
