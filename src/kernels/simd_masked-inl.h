// SPDX-License-Identifier: MIT
// SIMD kernels over the valid positions of an (N, C, L) view with unit stride along L, for masks
// with holes (route_groups.cpp): valid[n·L + l] != 0 marks position l of sample n, in the compute
// type of the input (float for float32, double otherwise). Statistics and sums take the valid
// values only; outputs are written whole, 0 at the other positions. Values at invalid positions
// are loaded but only ever selected away (a NaN there changes nothing).
// Included once per Highway target by simd.cpp (hence the toggle guard, as in Highway's -inl.h).
#if defined(BN1D_KERNELS_SIMD_MASKED_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BN1D_KERNELS_SIMD_MASKED_INL_H_
#undef BN1D_KERNELS_SIMD_MASKED_INL_H_
#else
#define BN1D_KERNELS_SIMD_MASKED_INL_H_
#endif

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "hwy/highway.h"
#include "kernels/simd-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The valid lanes of float64 lanes at valid + l.
template <class M>
HWY_INLINE auto ValidLanes(const M* HWY_RESTRICT valid) {
  return hn::Ne(LoadD(valid), hn::Zero(DD()));
}

// Mean and M2 of channel c over its valid values (count of them, > 0): two passes in float64
// lanes, rows in order.
template <class T>
void stats_masked_channel(const View3& x, const ComputeOf<T>* valid, int64_t c, double count,
                          double* mean, double* m2) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  VD s = hn::Zero(DD());
  double s_tail = 0.0;
  for (int64_t n = 0; n < x.N; ++n) {
    const T* p = row_ptr<T>(x, n, c, 0);
    const ComputeOf<T>* v = valid + n * x.L;
    int64_t l = 0;
    for (; l + N <= x.L; l += N)
      s = hn::Add(s, hn::IfThenElseZero(ValidLanes(v + l), LoadD(p + l)));
    for (; l < x.L; ++l)
      if (v[l] != 0) s_tail += static_cast<double>(to_compute(p[l]));
  }
  const double mu = (ReduceSum(s) + s_tail) / count;
  const VD vmu = hn::Set(DD(), mu);
  VD q = hn::Zero(DD());
  double q_tail = 0.0;
  for (int64_t n = 0; n < x.N; ++n) {
    const T* p = row_ptr<T>(x, n, c, 0);
    const ComputeOf<T>* v = valid + n * x.L;
    int64_t l = 0;
    for (; l + N <= x.L; l += N) {
      const VD e = hn::Sub(LoadD(p + l), vmu);
      q = hn::Add(q, hn::IfThenElseZero(ValidLanes(v + l), hn::Mul(e, e)));
    }
    for (; l < x.L; ++l) {
      if (v[l] == 0) continue;
      const double e = static_cast<double>(to_compute(p[l])) - mu;
      q_tail += e * e;
    }
  }
  mean[c] = mu;
  m2[c] = ReduceSum(q) + q_tail;
}

// Σ dy and Σ dy · (x − mean) of channel c over its valid values, rows in order.
template <class T, Activation A>
void backward_sums_masked_channel(const View3& dy, const View3& x, const ComputeOf<T>* valid,
                                  const double* mean, const Act& act, int64_t c, double* sum_dy,
                                  double* sum_dy_xmu) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const VD vm = hn::Set(DD(), mean[c]);
  SumsGate<T, A> gate{};
  if constexpr (A != Activation::None) gate = SumsGate<T, A>::of(act, c);
  VD s = hn::Zero(DD()), sx = hn::Zero(DD());
  double s_tail = 0.0, sx_tail = 0.0;
  for (int64_t n = 0; n < x.N; ++n) {
    const T* g = row_ptr<T>(dy, n, c, 0);
    const T* p = row_ptr<T>(x, n, c, 0);
    const ComputeOf<T>* v = valid + n * x.L;
    int64_t l = 0;
    for (; l + N <= x.L; l += N) {
      const auto m = ValidLanes(v + l);
      const VD xv = LoadD(p + l);
      const VD xm = hn::Sub(xv, vm);
      const VD gv = gate(xv, LoadD(g + l));
      s = hn::Add(s, hn::IfThenElseZero(m, gv));
      sx = hn::Add(sx, hn::IfThenElseZero(m, hn::Mul(gv, xm)));
    }
    for (; l < x.L; ++l) {
      if (v[l] == 0) continue;
      const double gl = gate_scalar<T, A>(act, c, p[l], g[l]);
      s_tail += gl;
      sx_tail += gl * (widen(p[l]) - mean[c]);
    }
  }
  sum_dy[c] = ReduceSum(s) + s_tail;
  sum_dy_xmu[c] = ReduceSum(sx) + sx_tail;
}

// The mean split into two compute values whose sum is the float64 mean (mean_lo is 0 in float64).
template <class CT>
HWY_INLINE void SplitMean(double mean, CT& hi, CT& lo) {
  hi = static_cast<CT>(mean);
  lo = std::is_same_v<CT, double> ? CT{0} : static_cast<CT>(mean - static_cast<double>(hi));
}

// The valid lanes of d at valid + l: load(valid + l) where the compute type is the storage type
// (the tail's masked loader included), a full vector otherwise (16-bit tails are scalar).
template <class T, class D, class Load>
HWY_INLINE auto ValidCompute(D d, const ComputeOf<T>* HWY_RESTRICT valid, Load load) {
  if constexpr (std::is_same_v<T, ComputeOf<T>>)
    return hn::Ne(load(valid), hn::Zero(d));
  else
    return hn::Ne(hn::LoadU(d, valid), hn::Zero(d));
}

// Output rows i0 … i1 − 1 (i = n·C + c): y = ((x − mean_hi) − mean_lo) · scale + shift at the
// valid positions (normalize_rows' arithmetic, with its activation), 0 elsewhere.
template <class T, Activation A>
void normalize_masked_rows(const Out3& y, const View3& x, const ComputeOf<T>* valid,
                           const double* mean, const double* scale, const double* shift,
                           double slope, int64_t i0, int64_t i1, bool stream) {
  using CT = ComputeOf<T>;
  const hn::ScalableTag<CT> d;
  const int64_t L = x.L, C = x.C;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t n = i / C, c = i % C;
    const T* p = row_ptr<T>(x, n, c, 0);
    const ComputeOf<T>* v = valid + n * L;
    T* out = static_cast<T*>(y.data) + n * y.sN + c * y.sC;
    CT mh, ml;
    SplitMean(mean[c], mh, ml);
    const CT sc = static_cast<CT>(scale[c]), sh = static_cast<CT>(shift[c]);
    const auto vmh = hn::Set(d, mh), vml = hn::Set(d, ml), vs = hn::Set(d, sc), vb = hn::Set(d, sh);
    write_run(
        d, out, L, stream,
        [&](int64_t l, auto load) {
          const auto xm = SubMean(load(p + l), vmh, vml);
          if constexpr (A == Activation::None)
            return hn::IfThenElseZero(ValidCompute<T>(d, v + l, load), hn::MulAdd(xm, vs, vb));
          else
            return hn::IfThenElseZero(
                ValidCompute<T>(d, v + l, load),
                Activate<T, A>(ActInput(xm, vs, vb), hn::Set(d, static_cast<CT>(slope))));
        },
        [&](int64_t l) -> CT {
          if (v[l] == 0) return CT{0};
          if constexpr (A == Activation::None)
            return std::fma((to_compute(p[l]) - mh) - ml, sc, sh);
          else
            return act_value<T>(
                A, ActChannel<T>{mh, ml, sc, sh, static_cast<CT>(slope)}.input(to_compute(p[l])),
                static_cast<CT>(slope));
        });
  }
  if (stream) hwy::FlushStream();
}

// Output rows i0 … i1 − 1: dx = a · dy + b · (x − mean) + k at the valid positions
// (backward_input_rows' arithmetic), 0 elsewhere.
template <class T, Activation A>
void backward_input_masked_rows(const Out3& dx, const View3& dy, const View3& x,
                                const ComputeOf<T>* valid, const double* mean, const double* a,
                                const double* b, const double* k, const Act& act, int64_t i0,
                                int64_t i1, bool stream) {
  using CT = ComputeOf<T>;
  const hn::ScalableTag<CT> d;
  const int64_t L = x.L, C = x.C;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t n = i / C, c = i % C;
    const T* g = row_ptr<T>(dy, n, c, 0);
    const T* p = row_ptr<T>(x, n, c, 0);
    const ComputeOf<T>* v = valid + n * L;
    T* out = static_cast<T*>(dx.data) + n * dx.sN + c * dx.sC;
    CT mh, ml;
    SplitMean(mean[c], mh, ml);
    const CT ac = static_cast<CT>(a[c]), bc = static_cast<CT>(b[c]), kc = static_cast<CT>(k[c]);
    const auto vmh = hn::Set(d, mh), vml = hn::Set(d, ml), va = hn::Set(d, ac), vb = hn::Set(d, bc),
               vk = hn::Set(d, kc);
    const ActChannel<T> channel{mh, ml, static_cast<CT>(A == Activation::None ? 0.0 : act.scale[c]),
                                static_cast<CT>(A == Activation::None ? 0.0 : act.shift[c]),
                                static_cast<CT>(act.slope)};
    const auto vsc = hn::Set(d, channel.scale), vsh = hn::Set(d, channel.shift),
               vsl = hn::Set(d, channel.slope);
    write_run(
        d, out, L, stream,
        [&](int64_t l, auto load) {
          const auto xm = SubMean(load(p + l), vmh, vml);
          const auto gated = Gate<T, A>(ActInput(xm, vsc, vsh), load(g + l), vsl);
          return hn::IfThenElseZero(ValidCompute<T>(d, v + l, load),
                                    hn::MulAdd(va, gated, hn::MulAdd(vb, xm, vk)));
        },
        [&](int64_t l) -> CT {
          if (v[l] == 0) return CT{0};
          CT gated = to_compute(g[l]);
          if constexpr (A != Activation::None)
            gated = act_gate<T>(A, channel.input(to_compute(p[l])), gated, channel.slope);
          return std::fma(ac, gated, std::fma(bc, (to_compute(p[l]) - mh) - ml, kc));
        });
  }
  if (stream) hwy::FlushStream();
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BN1D_KERNELS_SIMD_MASKED_INL_H_
