// SPDX-License-Identifier: MIT
// Per-target helpers of the SIMD kernels: float32/float64 loads and stores through float64
// lanes, so that every kernel accumulates and computes in float64 and rounds once on output.
// Included once per Highway target by simd.cpp.
#if defined(BN1D_KERNELS_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BN1D_KERNELS_SIMD_INL_H_
#undef BN1D_KERNELS_SIMD_INL_H_
#else
#define BN1D_KERNELS_SIMD_INL_H_
#endif

#include <cstdint>
#include <type_traits>

#include "kernels/blocking.hpp"
#include "kernels/view.hpp"

#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DD = hn::ScalableTag<double>;
using VD = hn::Vec<DD>;
/// T lanes matching the float64 lanes (half-width vectors for float).
template <class T>
using DT = hn::Rebind<T, DD>;
/// Float64 lanes as T lanes (rounded once for float; beyond float's range to ±inf, as a cast).
template <class T>
HWY_INLINE hn::Vec<DT<T>> ToT(VD v) {
  if constexpr (std::is_same_v<T, double>) {
    return v;
  } else {
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
  }
}
/// T lanes as float64 lanes (exact).
HWY_INLINE VD ToD(VD v) { return v; }
HWY_INLINE VD ToD(hn::Vec<DT<float>> v) { return hn::PromoteTo(DD(), v); }

/// Lanes(DD()) values of T at p, as float64.
template <class T>
HWY_INLINE VD LoadD(const T* HWY_RESTRICT p) {
  return ToD(hn::LoadU(DT<T>(), p));
}

/// Stores float64 lanes to p as T (rounding once).
template <class T>
HWY_INLINE void StoreD(VD v, T* HWY_RESTRICT p) {
  hn::StoreU(ToT<T>(v), DT<T>(), p);
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

/// out[i] = vec(i, load) (lanes i … i + lanes − 1) or scalar(i) for i in [0, len): vec reads its
/// operands with load(p), a full vector at p, or (the tail, with kMaskedTails) only the lanes
/// before len, the others 0, and the tail is stored with a mask. With @p stream the vectors go
/// out as non-temporal stores (whole cache lines, no read-for-ownership), after a scalar
/// prologue up to the first aligned address; the caller ends with hwy::FlushStream().
template <class D, class T, class VecF, class ScalarF>
HWY_INLINE void write_run(D d, T* HWY_RESTRICT out, int64_t len, bool stream, VecF vec,
                          ScalarF scalar) {
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const auto full = [d](const T* p) { return hn::LoadU(d, p); };
  int64_t i = 0;
  if (stream) {
    const auto vector_bytes = static_cast<uintptr_t>(N) * sizeof(T);
    for (; i < len && reinterpret_cast<uintptr_t>(out + i) % vector_bytes != 0; ++i)
      out[i] = scalar(i);
    for (; i + N <= len; i += N) hn::Stream(vec(i, full), d, out + i);
  } else {
    for (; i + N <= len; i += N) hn::StoreU(vec(i, full), d, out + i);
  }
  if constexpr (kMaskedTails) {
    if (i < len) {
      const auto m = hn::FirstN(d, static_cast<size_t>(len - i));
      const auto masked = [d, m](const T* p) { return hn::MaskedLoad(m, d, p); };
      hn::BlendedStore(vec(i, masked), m, d, out + i);
    }
  } else {
    for (; i < len; ++i) out[i] = scalar(i);
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
