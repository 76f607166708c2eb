// SPDX-License-Identifier: MIT
// Per-target helpers of the SIMD kernels: loads and stores of every storage type through float64
// lanes, so that the reductions accumulate in float64 and outputs are rounded once.
// Included once per Highway target by each Highway TU (simd.cpp, simd_forward.cpp,
// simd_backward_*.cpp, simd_gate.cpp).
#if defined(BN1D_KERNELS_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BN1D_KERNELS_SIMD_INL_H_
#undef BN1D_KERNELS_SIMD_INL_H_
#else
#define BN1D_KERNELS_SIMD_INL_H_
#endif

#include <cstdint>
#include <type_traits>

#include "kernels/activation.hpp"
#include "kernels/blocking.hpp"
#include "kernels/element.hpp"
#include "kernels/gate_interval.hpp"
#include "kernels/view.hpp"

#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DD = hn::ScalableTag<double>;
using VD = hn::Vec<DD>;

/// Highway's lane type for storage type T: the 16-bit types are handled as their bits.
template <class T>
using LaneOf = std::conditional_t<kIs16Bit<T>, uint16_t, T>;
/// T lanes matching the float64 lanes (half-width vectors for float, quarter for 16-bit).
template <class T>
using DT = hn::Rebind<LaneOf<T>, DD>;
/// The type the elementwise kernels compute in: T itself, float64 for the 16-bit types.
template <class T>
using ComputeOf = std::conditional_t<kIs16Bit<T>, double, T>;

/// Whether this target converts 16-bit values lane by lane through the scalar oracle
/// (element.hpp): the emulated targets, and float16 without F16C, whose Highway 1.0.3 emulation
/// truncates and maps inf/NaN to finite values.
template <class T>
constexpr bool kLanewise = kIs16Bit<T> && (HWY_TARGET == HWY_SCALAR || HWY_TARGET == HWY_EMU128 ||
                                           (std::is_same_v<T, Float16> &&
                                            !(HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2)));

/// Float64 lanes rounded once to the precision and range of the 16-bit type T (to nearest, ties
/// to even), still as float64: |v| + M − M with M = 1.5 · 2^(e + 52 − mantissa bits), e the
/// exponent of |v| (at least the smallest normal's, so that subnormals round on their fixed
/// grid), adds at T's ulp; |v| is first clamped to the power of 2 where T's range ends, which
/// rounds to ±inf. The result converts to float32 exactly
/// (docs/math.md#one-rounding-in-float64-lanes).
template <class T>
HWY_INLINE VD RoundTo16BitPrecision(VD v) {
  constexpr bool kBF16 = std::is_same_v<T, BFloat16>;
  constexpr double kMinNormal = kBF16 ? 0x1.0p-126 : 0x1.0p-14;
  constexpr double kEnd = kBF16 ? 0x1.0p128 : 0x1.0p16;
  constexpr double kMagic = kBF16 ? 0x1.8p45 : 0x1.8p42;  // 1.5 · 2^(52 − mantissa bits)
  const DD d;
  const hn::RebindToUnsigned<DD> du;
  const VD sign = hn::BitCast(d, hn::Set(du, 0x8000000000000000ull));
  const VD exponent = hn::BitCast(d, hn::Set(du, 0x7FF0000000000000ull));
  const VD a = hn::Min(hn::Abs(v), hn::Set(d, kEnd));
  const VD magic =
      hn::Mul(hn::Max(hn::And(a, exponent), hn::Set(d, kMinNormal)), hn::Set(d, kMagic));
  const VD rounded = hn::Or(hn::Sub(hn::Add(a, magic), magic), hn::And(v, sign));
  return hn::IfThenElse(hn::IsNaN(v), v, rounded);
}

/// Float64 lanes as T lanes, rounded once (to nearest, ties to even; beyond T's range to ±inf):
/// docs/tuning.md#sixteen-bit-rounding.
template <class T>
HWY_INLINE hn::Vec<DT<T>> ToT(VD v) {
  if constexpr (std::is_same_v<T, double>) {
    return v;
  } else if constexpr (std::is_same_v<T, float>) {
#if HWY_TARGET == HWY_SCALAR || HWY_TARGET == HWY_EMU128
    // The emulated DemoteTo saturates to ±FLT_MAX: cast lane by lane instead.
    HWY_ALIGN double in[HWY_MAX_BYTES / sizeof(double)];
    HWY_ALIGN float out[HWY_MAX_BYTES / sizeof(double)];
    hn::Store(v, DD(), in);
    for (size_t i = 0; i < hn::Lanes(DD()); ++i) out[i] = static_cast<float>(in[i]);
    return hn::Load(DT<float>(), out);
#else
    return hn::DemoteTo(DT<float>(), v);
#endif
  } else if constexpr (kLanewise<T>) {
    HWY_ALIGN double in[HWY_MAX_BYTES / sizeof(double)];
    HWY_ALIGN uint16_t out[HWY_MAX_BYTES / sizeof(double)];
    hn::Store(v, DD(), in);
    for (size_t i = 0; i < hn::Lanes(DD()); ++i) out[i] = narrow<T>(in[i]).bits;
    return hn::Load(DT<T>(), out);
  } else {
    // Rounded in float64, the value is exact in float32 and in T: the conversions cut nothing.
    const hn::Rebind<float, DD> df;
    const auto exact = hn::DemoteTo(df, RoundTo16BitPrecision<T>(v));
    if constexpr (std::is_same_v<T, Float16>) {
      return hn::BitCast(DT<T>(), hn::DemoteTo(hn::Rebind<hwy::float16_t, DD>(), exact));  // F16C
    } else {  // bfloat16: the top half of the float32's bits
      const hn::Rebind<int32_t, DD> di;
      return hn::DemoteTo(
          DT<T>(),
          hn::BitCast(di, hn::ShiftRight<16>(hn::BitCast(hn::Rebind<uint32_t, DD>(), exact))));
    }
  }
}
/// T lanes as float64 lanes (exact).
HWY_INLINE VD ToD(VD v) { return v; }
HWY_INLINE VD ToD(hn::Vec<DT<float>> v) { return hn::PromoteTo(DD(), v); }

/// Lanes(DD()) values of T at p, as float64.
template <class T>
HWY_INLINE VD LoadD(const T* HWY_RESTRICT p) {
  if constexpr (!kIs16Bit<T>) {
    return ToD(hn::LoadU(DT<T>(), p));
  } else if constexpr (kLanewise<T>) {
    HWY_ALIGN double out[HWY_MAX_BYTES / sizeof(double)];
    for (size_t i = 0; i < hn::Lanes(DD()); ++i) out[i] = widen(p[i]);
    return hn::Load(DD(), out);
  } else {
    const auto bits = hn::LoadU(DT<T>(), reinterpret_cast<const uint16_t*>(p));
    const hn::Rebind<float, DD> df;
    if constexpr (std::is_same_v<T, Float16>) {
      const hn::Rebind<hwy::float16_t, DD> dh;
      return hn::PromoteTo(DD(), hn::PromoteTo(df, hn::BitCast(dh, bits)));
    } else {
      const hn::Rebind<uint32_t, DD> du;
      return hn::PromoteTo(DD(), hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, bits))));
    }
  }
}

/// Stores float64 lanes to p as T (rounding once).
template <class T>
HWY_INLINE void StoreD(VD v, T* HWY_RESTRICT p) {
  hn::StoreU(ToT<T>(v), DT<T>(), reinterpret_cast<LaneOf<T>*>(p));
}

/// A stored value in the compute type (exact).
template <class T>
HWY_INLINE ComputeOf<T> to_compute(T v) {
  if constexpr (kIs16Bit<T>)
    return widen(v);
  else
    return v;
}
/// A computed value stored as T (rounded once).
template <class T>
HWY_INLINE T from_compute(ComputeOf<T> v) {
  if constexpr (kIs16Bit<T>)
    return narrow<T>(v);
  else
    return v;
}
/// A vector of d's compute lanes from storage T at p.
template <class D, class T>
HWY_INLINE hn::Vec<D> LoadC(D d, const T* HWY_RESTRICT p) {
  if constexpr (kIs16Bit<T>)
    return LoadD(p);
  else
    return hn::LoadU(d, p);
}
/// Stores compute lanes to storage T at p (rounded once); with @p stream, p aligned to the
/// stored vector, as a non-temporal store.
template <class D, class T>
HWY_INLINE void StoreC(D d, hn::Vec<D> v, T* HWY_RESTRICT p, bool stream = false) {
  if constexpr (kIs16Bit<T>) {
    auto* lanes = reinterpret_cast<LaneOf<T>*>(p);
    if (stream)
      hn::Stream(ToT<T>(v), DT<T>(), lanes);
    else
      hn::StoreU(ToT<T>(v), DT<T>(), lanes);
  } else if (stream) {
    hn::Stream(v, d, p);
  } else {
    hn::StoreU(v, d, p);
  }
}

/// x − mean as the elementwise kernels form it, (x − mean_hi) − mean_lo; in float64 lanes mean_lo
/// is +0, whose subtraction changes no bit, and is skipped.
template <class V>
HWY_INLINE V SubMean(V x, V mean_hi, V mean_lo) {
  if constexpr (std::is_same_v<hn::TFromV<V>, double>) {
    (void)mean_lo;
    return hn::Sub(x, mean_hi);
  } else {
    return hn::Sub(hn::Sub(x, mean_hi), mean_lo);
  }
}

// ---- The fused activation (activation.hpp) ---------------------------------------------------

/// z = xm · scale + shift from xm = (x − mean_hi) − mean_lo, a product then a sum (never an
/// FMA): ActChannel::input's bits in every lane.
template <class V>
HWY_INLINE V ActInput(V xm, V scale, V shift) {
  return hn::Add(hn::Mul(xm, scale), shift);
}

/// act_value: ReLU keeps z where it is not ≤ kActiveAbove<T> (NaN too), else +0; LeakyReLU
/// keeps z where it is > kActiveAbove<T>, else z · slope.
template <class T, Activation A, class V>
HWY_INLINE V Activate(V z, V slope) {
  const V above = hn::Set(hn::DFromV<V>(), static_cast<hn::TFromV<V>>(kActiveAbove<T>));
  if constexpr (A == Activation::ReLU)
    return hn::IfThenZeroElse(hn::Le(z, above), z);
  else if constexpr (A == Activation::LeakyReLU)
    return hn::IfThenElse(hn::Gt(z, above), z, hn::Mul(z, slope));
  else
    return z;
}

/// act_gate: dy times the activation's derivative at z (dy itself without an activation).
template <class T, Activation A, class V>
HWY_INLINE V Gate(V z, V dy, V slope) {
  const V above = hn::Set(hn::DFromV<V>(), static_cast<hn::TFromV<V>>(kActiveAbove<T>));
  if constexpr (A == Activation::ReLU)
    return hn::IfThenZeroElse(hn::Le(z, above), dy);
  else if constexpr (A == Activation::LeakyReLU)
    return hn::IfThenElse(hn::Gt(z, above), dy, hn::Mul(dy, slope));
  else
    return dy;
}

/// The gate of the gradient sums, which read float64 lanes: dy gated by the channels' tests
/// (gate_interval.hpp: GateTest, act.gate_*), per lane (cols) or broadcast (rows); act_gate's
/// bits in two operations.
template <class T, Activation A>
struct SumsGate {
  VD keep, flip, max, slope;

  /// Channel c's test in every lane.
  static HWY_INLINE SumsGate of(const Act& act, int64_t c) {
    const DD d;
    const hn::RebindToUnsigned<DD> du;
    return {hn::BitCast(d, hn::Set(du, act.gate_keep[c])),
            hn::BitCast(d, hn::Set(du, act.gate_flip[c])), hn::Set(d, act.gate_max[c]),
            slope_of(act)};
  }
  /// Channels c … c + lanes − 1, one per lane.
  static HWY_INLINE SumsGate of_lanes(const Act& act, int64_t c) {
    const DD d;
    const hn::RebindToUnsigned<DD> du;
    return {hn::BitCast(d, hn::LoadU(du, act.gate_keep + c)),
            hn::BitCast(d, hn::LoadU(du, act.gate_flip + c)), hn::LoadU(d, act.gate_max + c),
            slope_of(act)};
  }
  /// dy gated at the stored inputs x (both widened to float64 lanes).
  HWY_INLINE VD operator()(VD x, VD dy) const {
    if constexpr (A == Activation::None) {
      return dy;
    } else {
      const auto in = hn::Le(hn::Xor(hn::And(x, keep), flip), max);  // GateTest::holds
      if constexpr (A == Activation::ReLU) return hn::IfThenZeroElse(in, dy);
      return hn::IfThenElse(in, dy, leak(dy));
    }
  }

 private:
  // The slope in ActCompute<T>, widened.
  static HWY_INLINE VD slope_of(const Act& act) {
    return hn::Set(DD(), static_cast<double>(static_cast<ActCompute<T>>(act.slope)));
  }
  // dy · slope as act_gate rounds it: in float64, or, for float32 inputs, exact in float64
  // (24 + 24 bits) and then rounded once to float32.
  HWY_INLINE VD leak(VD dy) const {
    const VD product = hn::Mul(dy, slope);
    if constexpr (std::is_same_v<ActCompute<T>, float>)
      return ToD(ToT<float>(product));
    else
      return product;
  }
};

/// The gated dy of one value of channel c in scalar code (the kernels' tails), act_gate's bits.
template <class T, Activation A>
HWY_INLINE double gate_scalar(const Act& act, int64_t c, T x, T dy) {
  if constexpr (A == Activation::None) {
    return widen(dy);
  } else {
    const GateTest test{act.gate_keep[c], act.gate_flip[c], act.gate_max[c]};
    return gate_by_test<T>(A, test.holds(widen(x)), widen(dy),
                           static_cast<ActCompute<T>>(act.slope));
  }
}

HWY_INLINE double ReduceSum(VD v) { return hn::GetLane(hn::SumOfLanes(DD(), v)); }

/// x − y, bit for bit, computed as fma(x, 1, −y) where the target has FMA: in the float64
/// reductions of float32 values the adders also carry the conversions and the sums, and the FMA
/// units have room (docs/tuning.md#sub-on-fma).
HWY_INLINE VD SubOnFma(VD x, VD y) {
#if HWY_NATIVE_FMA
  return hn::MulSub(x, hn::Set(DD(), 1.0), y);
#else
  return hn::Sub(x, y);
#endif
}

/// Whether masked loads and stores touch no memory outside their active lanes on this target
/// (AVX-512, SVE, RVV; not AVX2 and older, where Highway may emulate them with full-vector
/// accesses): the tails of rows then run as one masked vector instead of a scalar loop.
constexpr bool kMaskedTails = !HWY_MEM_OPS_MIGHT_FAULT;

/// out[i] = vec(i, load) (lanes i … i + lanes − 1) or scalar(i) for i in [0, len), computed in
/// d's lanes and stored as T (rounded once): vec reads its operands with load(p), a full vector
/// at p, or (the tail, with kMaskedTails, T the compute type) only the lanes before len, the
/// others 0, and the tail is stored with a mask. With @p stream the vectors go out as
/// non-temporal stores (whole cache lines, no read-for-ownership), after a scalar prologue up to
/// the first aligned address; the caller ends with hwy::FlushStream().
template <class D, class T, class VecF, class ScalarF>
HWY_INLINE void write_run(D d, T* HWY_RESTRICT out, int64_t len, bool stream, VecF vec,
                          ScalarF scalar) {
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const auto full = [d](const T* p) { return LoadC(d, p); };
  // x86 non-temporal stores write 16 bytes: 16-bit outputs of shorter vectors (AVX2 and older
  // targets: 8 or 4 bytes) are stored normally (docs/tuning.md#sixteen-bit-streaming).
  if (kIs16Bit<T> && N * static_cast<int64_t>(sizeof(T)) < 16) stream = false;
  int64_t i = 0;
  if (stream) {
    const auto vector_bytes = static_cast<uintptr_t>(N) * sizeof(T);
    for (; i < len && reinterpret_cast<uintptr_t>(out + i) % vector_bytes != 0; ++i)
      out[i] = from_compute<T>(scalar(i));
    for (; i + N <= len; i += N) StoreC(d, vec(i, full), out + i, /*stream=*/true);
  } else {
    for (; i + N <= len; i += N) StoreC(d, vec(i, full), out + i);
  }
  if constexpr (kMaskedTails && !kIs16Bit<T>) {
    if (i < len) {
      const auto m = hn::FirstN(d, static_cast<size_t>(len - i));
      const auto masked = [d, m](const T* p) { return hn::MaskedLoad(m, d, p); };
      hn::BlendedStore(vec(i, masked), m, d, out + i);
    }
  } else {
    for (; i < len; ++i) out[i] = from_compute<T>(scalar(i));
  }
}

template <class T>
const T* row_ptr(const View3& v, int64_t n, int64_t c, int64_t l) {
  return static_cast<const T*>(v.data) + n * v.sN + c * v.sC + l * v.sL;
}

// Chan's merge of (nb, mean_b, m2_b) into (na, mean, m2); na is the count before the merge.
HWY_INLINE void chan_merge(double na, double nb, double mean_b, double m2_b, double& mean,
                           double& m2) {
  const double n = na + nb, delta = mean_b - mean;
  mean += delta * (nb / n);
  m2 += m2_b + delta * delta * (na * nb / n);
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BN1D_KERNELS_SIMD_INL_H_
