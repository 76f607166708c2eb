// SPDX-License-Identifier: MIT
// SIMD kernels of Layout::UnitStrideL, the "rows" kernels: every (n, c) row of L values is
// contiguous (sL == 1); they vectorize along L.
// Included once per Highway target by the Highway TUs that use them (hence the toggle guard, as in
// Highway's -inl.h).
#if defined(BN1D_KERNELS_SIMD_ROWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BN1D_KERNELS_SIMD_ROWS_INL_H_
#undef BN1D_KERNELS_SIMD_ROWS_INL_H_
#else
#define BN1D_KERNELS_SIMD_ROWS_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "hwy/highway.h"
#include "kernels/elementwise_params.hpp"
#include "kernels/simd-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The statistics passes prefetch the values this many bytes ahead of the ones they read, which the
// hardware prefetchers alone do not keep up with; the other passes do not prefetch:
// docs/tuning.md#rows-prefetch.
constexpr std::uintptr_t kPrefetchBytes = 8192;

// Prefetches (into every cache level) the lines of [p, p + bytes) moved kPrefetchBytes ahead;
// addresses past the data are harmless (a prefetch never faults).
HWY_INLINE void prefetch_ahead(const void* p, std::size_t bytes) {
  const auto at = reinterpret_cast<std::uintptr_t>(p) + kPrefetchBytes;
  for (std::size_t b = 0; b < bytes; b += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(at + b), 0, 3);
}

// Four independent accumulators hide the latency of float64 adds.
struct Acc4 {
  VD a0, a1, a2, a3;
  Acc4() : a0(hn::Zero(DD())), a1(hn::Zero(DD())), a2(hn::Zero(DD())), a3(hn::Zero(DD())) {}
  double sum() const { return ReduceSum(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))); }
};

// acc += (p[i] − shift) over the full vectors of p[0, len); returns the tail's sum. Blocks sum
// their values minus their first value, so that a constant block has exactly that mean.
template <class T>
HWY_INLINE double add_row(Acc4& acc, const T* p, int64_t len, double shift) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const VD k = hn::Set(DD(), shift);
  int64_t i = 0;
  for (; i + 4 * N <= len; i += 4 * N) {
    prefetch_ahead(p + i, 4 * N * sizeof(T));
    acc.a0 = hn::Add(acc.a0, hn::Sub(LoadD(p + i), k));
    acc.a1 = hn::Add(acc.a1, hn::Sub(LoadD(p + i + N), k));
    acc.a2 = hn::Add(acc.a2, hn::Sub(LoadD(p + i + 2 * N), k));
    acc.a3 = hn::Add(acc.a3, hn::Sub(LoadD(p + i + 3 * N), k));
  }
  for (; i + N <= len; i += N) acc.a0 = hn::Add(acc.a0, hn::Sub(LoadD(p + i), k));
  double tail = 0.0;
  for (; i < len; ++i) tail += widen(p[i]) - shift;
  return tail;
}

// acc += (p[i] − mean)² over the full vectors; returns the tail's sum.
template <class T>
HWY_INLINE double add_row_sqdev(Acc4& acc, const T* p, int64_t len, double mean) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const VD m = hn::Set(DD(), mean);
  auto sq = [&](VD& a, int64_t at) {
    const VD dv = hn::Sub(LoadD(p + at), m);
    a = hn::MulAdd(dv, dv, a);
  };
  int64_t i = 0;
  for (; i + 4 * N <= len; i += 4 * N) {
    sq(acc.a0, i);
    sq(acc.a1, i + N);
    sq(acc.a2, i + 2 * N);
    sq(acc.a3, i + 3 * N);
  }
  for (; i + N <= len; i += N) sq(acc.a0, i);
  double tail = 0.0;
  for (; i < len; ++i) {
    const double dv = widen(p[i]) - mean;
    tail += dv * dv;
  }
  return tail;
}

// s += d, q += d² with d = p[i] − shift, over the full vectors of p[0, len); returns the
// tail's Σd and Σd² through tail_s, tail_q.
template <class T>
HWY_INLINE void add_row_shifted(Acc4& s, Acc4& q, const T* p, int64_t len, double shift,
                                double& tail_s, double& tail_q) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const VD k = hn::Set(DD(), shift);
  auto step = [&](VD& as, VD& aq, int64_t at) {
    const VD d = hn::Sub(LoadD(p + at), k);
    as = hn::Add(as, d);
    aq = hn::MulAdd(d, d, aq);
  };
  int64_t i = 0;
  for (; i + 4 * N <= len; i += 4 * N) {
    prefetch_ahead(p + i, 4 * N * sizeof(T));
    step(s.a0, q.a0, i);
    step(s.a1, q.a1, i + N);
    step(s.a2, q.a2, i + 2 * N);
    step(s.a3, q.a3, i + 3 * N);
  }
  for (; i + N <= len; i += N) step(s.a0, q.a0, i);
  for (; i < len; ++i) {
    const double d = widen(p[i]) - shift;
    tail_s += d;
    tail_q += d * d;
  }
}

// Mean and M2 of one block of at most kBlock values: `rows` rows of channel values, row r's
// `len` values at row(r). float32 and the 16-bit types: one pass, in values shifted by the
// block's first value (mean_b = K + s/n, M2_b = q − s²/n); the subtraction loses at most
// log2(n + 1) ≤ 12 of float64's 53 bits (docs/math.md), far below float32's 24, and the pass
// costs a third fewer operations than two (widening to float64 makes these passes
// compute-bound). float64:
// two passes (the mean, then squared deviations from it), which keep those bits; a float64 pass
// is bound by memory.
template <class T, class RowAt>
HWY_INLINE void block_stats(const RowAt& row, int64_t rows, int64_t len, double& mean_b,
                            double& m2_b) {
  const double nb = static_cast<double>(rows * len);
  const double K = widen(row(0)[0]);
  if constexpr (!std::is_same_v<T, double>) {
    Acc4 s, q;
    double tail_s = 0.0, tail_q = 0.0;
    for (int64_t r = 0; r < rows; ++r) add_row_shifted(s, q, row(r), len, K, tail_s, tail_q);
    const double sum = s.sum() + tail_s;
    mean_b = K + sum / nb;
    m2_b = std::max(q.sum() + tail_q - sum * (sum / nb), 0.0);
  } else {
    Acc4 s;
    double tail = 0.0;
    for (int64_t r = 0; r < rows; ++r) tail += add_row(s, row(r), len, K);
    mean_b = K + (s.sum() + tail) / nb;
    Acc4 q;
    tail = 0.0;
    for (int64_t r = 0; r < rows; ++r) tail += add_row_sqdev(q, row(r), len, mean_b);
    m2_b = q.sum() + tail;
  }
}

// Statistics of channel c. Blocks: row pieces of kBlock values when L ≥ kBlock, else groups of
// whole rows; each reduced by block_stats, merged in order.
template <class T>
void stats_rows_channel(const View3& x, int64_t c, double* mean_out, double* m2_out) {
  const int64_t N = x.N, L = x.L;
  const int64_t piece = L >= kBlock ? kBlock : L;
  const int64_t rows_per_block = L >= kBlock ? 1 : std::max<int64_t>(1, kBlock / L);
  double count = 0.0, mean = 0.0, m2 = 0.0;
  for (int64_t n0 = 0; n0 < N; n0 += rows_per_block) {
    const int64_t n1 = std::min(N, n0 + rows_per_block);
    for (int64_t l0 = 0; l0 < L; l0 += piece) {
      const int64_t len = std::min(piece, L - l0);
      double mean_b, m2_b;
      block_stats<T>([&](int64_t r) { return row_ptr<T>(x, n0 + r, c, l0); }, n1 - n0, len, mean_b,
                     m2_b);
      const double nb = static_cast<double>((n1 - n0) * len);
      chan_merge(count, nb, mean_b, m2_b, mean, m2);
      count += nb;
    }
  }
  *mean_out = mean;
  *m2_out = m2;
}

// Calls f(n, k0, k1, before) for each row n that units u0 … u1 − 1 reach (unit u = n · pieces + k
// covers the values k · kBlock … + kBlock − 1 of row n of every channel), with the range [k0, k1)
// of its pieces in the units and before = the values per channel of the units before row n's.
// A partition thus walks each channel's pieces of row n in turn: in memory order for (N, C, L)
// memory (docs/tuning.md#rows-walk-order).
template <class F>
HWY_INLINE void for_rows_of_units(int64_t L, int64_t u0, int64_t u1, const F& f) {
  const int64_t pieces = (L + kBlock - 1) / kBlock;
  double before = 0.0;
  for (int64_t u = u0; u < u1;) {
    const int64_t n = u / pieces, k0 = u % pieces, k1 = std::min(pieces, k0 + (u1 - u));
    f(n, k0, k1, before);
    before += static_cast<double>(std::min(L, k1 * kBlock) - k0 * kBlock);
    u += k1 - k0;
  }
}

// Statistics of units u0 … u1 − 1 for all channels (see for_rows_of_units), into mean[C], m2[C]:
// each (n, c, piece) block is reduced by block_stats while in cache and merged, per channel in
// order of n and piece, with Chan's formula.
template <class T>
void stats_rows_partition(const View3& x, int64_t u0, int64_t u1, double* mean, double* m2) {
  std::fill_n(mean, x.C, 0.0);
  std::fill_n(m2, x.C, 0.0);
  for_rows_of_units(x.L, u0, u1, [&](int64_t n, int64_t k0, int64_t k1, double before) {
    for (int64_t c = 0; c < x.C; ++c) {
      double count = before;
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t l0 = k * kBlock, len = std::min(kBlock, x.L - l0);
        const double nb = static_cast<double>(len);
        const T* p = row_ptr<T>(x, n, c, l0);
        double mean_b, m2_b;
        block_stats<T>([p](int64_t) { return p; }, 1, len, mean_b, m2_b);
        chan_merge(count, nb, mean_b, m2_b, mean[c], m2[c]);
        count += nb;
      }
    }
  });
}

// Σ dy and Σ dy · (x − mean) over units u0 … u1 − 1 (walked as in stats_rows_partition), into
// sum_dy[C], sum_dy_xmu[C].
template <class T, Activation A>
void backward_sums_rows_partition(const View3& dy, const View3& x, const double* mean,
                                  const Act& act, int64_t u0, int64_t u1, double* sum_dy,
                                  double* sum_dy_xmu) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  // Rows that do not follow each other in memory (a run of a masked batch, a slice along L) break
  // the hardware prefetchers' streams: those are prefetched (docs/tuning.md#rows-prefetch).
  const bool gapped = x.sC != x.L || dy.sC != dy.L;
  std::fill_n(sum_dy, x.C, 0.0);
  std::fill_n(sum_dy_xmu, x.C, 0.0);
  for_rows_of_units(x.L, u0, u1, [&](int64_t n, int64_t k0, int64_t k1, double) {
    for (int64_t c = 0; c < x.C; ++c) {
      const VD m = hn::Set(DD(), mean[c]);
      SumsGate<T, A> gate{};
      if constexpr (A != Activation::None) gate = SumsGate<T, A>::of(act, c);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t l0 = k * kBlock, len = std::min(kBlock, x.L - l0);
        const T* g = row_ptr<T>(dy, n, c, l0);
        const T* p = row_ptr<T>(x, n, c, l0);
        VD s0 = hn::Zero(DD()), s1 = hn::Zero(DD()), sx0 = hn::Zero(DD()), sx1 = hn::Zero(DD());
        int64_t l = 0;
        for (; l + 2 * N <= len; l += 2 * N) {
          if (gapped) {
            prefetch_ahead(g + l, 2 * N * sizeof(T));
            prefetch_ahead(p + l, 2 * N * sizeof(T));
          }
          const VD x0 = LoadD(p + l), x1 = LoadD(p + l + N);
          const VD xm0 = hn::Sub(x0, m), xm1 = hn::Sub(x1, m);
          const VD g0 = gate(x0, LoadD(g + l)), g1 = gate(x1, LoadD(g + l + N));
          s0 = hn::Add(s0, g0);
          s1 = hn::Add(s1, g1);
          sx0 = hn::MulAdd(g0, xm0, sx0);
          sx1 = hn::MulAdd(g1, xm1, sx1);
        }
        for (; l + N <= len; l += N) {
          const VD x0 = LoadD(p + l);
          const VD xm0 = hn::Sub(x0, m);
          const VD g0 = gate(x0, LoadD(g + l));
          s0 = hn::Add(s0, g0);
          sx0 = hn::MulAdd(g0, xm0, sx0);
        }
        double s = ReduceSum(hn::Add(s0, s1)), sx = ReduceSum(hn::Add(sx0, sx1));
        for (; l < len; ++l) {
          const double gl = gate_scalar<T, A>(act, c, p[l], g[l]);
          s += gl;
          sx += gl * (widen(p[l]) - mean[c]);
        }
        sum_dy[c] += s;
        sum_dy_xmu[c] += sx;
      }
    }
  });
}

// Output rows i0 … i1 − 1 (i = n·C + c; unit stride along L), in lanes of ComputeOf<T>:
//   y = ((x − mean_hi) − mean_lo) · scale + shift, the parameters at P laid out as `block` says
// (always unfolded: folds_mean_lo). mean_hi + mean_lo is the float64 mean split into two T values:
// x − mean_hi is exact for x near the mean, so large offsets cost no precision. With an
// activation, y = act(z) with z formed as ActChannel::input forms it.
template <class T, Activation A>
void normalize_rows(const Out3& y, const View3& x, const ComputeOf<T>* P, const ParamBlock& block,
                    double slope, int64_t i0, int64_t i1, bool stream) {
  using CT = ComputeOf<T>;
  const hn::ScalableTag<CT> d;
  const int64_t L = x.L, C = x.C;
  const NormalizeColumns<CT, false> params{{P, block.C}};
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t n = i / C, c = i % C;
    const T* p = row_ptr<T>(x, n, c, 0);
    T* out = static_cast<T*>(y.data) + n * y.sN + c * y.sC;
    const CT mh = params.mean_hi_at(c), ml = params.mean_lo_at(c), sc = params.scale_at(c),
             sh = params.shift_at(c);
    const auto vmh = hn::Set(d, mh), vml = hn::Set(d, ml), vs = hn::Set(d, sc), vb = hn::Set(d, sh);
    write_run(
        d, out, L, stream,
        [&](int64_t l, auto load) {
          const auto xm = SubMean(load(p + l), vmh, vml);
          if constexpr (A == Activation::None)
            return hn::MulAdd(xm, vs, vb);
          else
            return Activate<T, A>(ActInput(xm, vs, vb), hn::Set(d, static_cast<CT>(slope)));
        },
        [&](int64_t l) -> CT {
          if constexpr (A == Activation::None) {
            return std::fma((to_compute(p[l]) - mh) - ml, sc, sh);
          } else {
            const ActChannel<T> channel{mh, ml, sc, sh, static_cast<CT>(slope)};
            return act_value<T>(A, channel.input(to_compute(p[l])), channel.slope);
          }
        });
  }
  if (stream) hwy::FlushStream();
}

// Σ dy and Σ dy · (x − mean) of channel c, accumulated row by row in a fixed order.
template <class T, Activation A>
void backward_sums_rows_channel(const View3& dy, const View3& x, const double* mean, const Act& act,
                                int64_t c, double* sum_dy, double* sum_dy_xmu) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const VD m = hn::Set(DD(), mean[c]);
  SumsGate<T, A> gate{};
  if constexpr (A != Activation::None) gate = SumsGate<T, A>::of(act, c);
  VD s = hn::Zero(DD()), sx = hn::Zero(DD());
  double s_tail = 0.0, sx_tail = 0.0;
  for (int64_t n = 0; n < x.N; ++n) {
    const T* g = row_ptr<T>(dy, n, c, 0);
    const T* p = row_ptr<T>(x, n, c, 0);
    int64_t l = 0;
    for (; l + N <= x.L; l += N) {
      const VD xv = LoadD(p + l);
      const VD xm = hn::Sub(xv, m);
      const VD gv = gate(xv, LoadD(g + l));
      s = hn::Add(s, gv);
      sx = hn::MulAdd(gv, xm, sx);
    }
    for (; l < x.L; ++l) {
      const double gl = gate_scalar<T, A>(act, c, p[l], g[l]);
      s_tail += gl;
      sx_tail += gl * (widen(p[l]) - mean[c]);
    }
  }
  *sum_dy = ReduceSum(s) + s_tail;
  *sum_dy_xmu = ReduceSum(sx) + sx_tail;
}

// dx rows i0 … i1 − 1 (unit stride along L), in lanes of ComputeOf<T>, as
// normalize_rows:
//   dx = a · dy + b · ((x − mean_hi) − mean_lo) + k.
// With an activation (backward_input_act_block), dy gated at z (ActChannel::input's bits).
template <class T, Activation A>
void backward_input_rows(const Out3& dx, const View3& dy, const View3& x, const ComputeOf<T>* P,
                         const ParamBlock& block, double slope, int64_t i0, int64_t i1,
                         bool stream) {
  using CT = ComputeOf<T>;
  const hn::ScalableTag<CT> d;
  const int64_t L = x.L, C = x.C;
  const BackwardInputColumns<CT, false> params{{P, block.C}};
  const auto vsl = hn::Set(d, static_cast<CT>(slope));
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t n = i / C, c = i % C;
    const T* g = row_ptr<T>(dy, n, c, 0);
    const T* p = row_ptr<T>(x, n, c, 0);
    T* out = static_cast<T*>(dx.data) + n * dx.sN + c * dx.sC;
    const CT mh = params.mean_hi_at(c), ml = params.mean_lo_at(c), a = params.a_at(c),
             b = params.b_at(c), k = params.k_at(c);
    const auto vmh = hn::Set(d, mh), vml = hn::Set(d, ml), va = hn::Set(d, a), vb = hn::Set(d, b),
               vk = hn::Set(d, k);
    const CT sc = A == Activation::None ? CT{0} : params.scale_at(c);
    const CT sh = A == Activation::None ? CT{0} : params.shift_at(c);
    const auto vsc = hn::Set(d, sc), vsh = hn::Set(d, sh);
    write_run(
        d, out, L, stream,
        [&](int64_t l, auto load) {
          const auto xm = SubMean(load(p + l), vmh, vml);
          if constexpr (A == Activation::None) {
            return hn::MulAdd(va, load(g + l), hn::MulAdd(vb, xm, vk));
          } else {
            const auto gated = Gate<T, A>(ActInput(xm, vsc, vsh), load(g + l), vsl);
            return hn::MulAdd(va, gated, hn::MulAdd(vb, xm, vk));
          }
        },
        [&](int64_t l) -> CT {
          CT gated = to_compute(g[l]);
          if constexpr (A != Activation::None) {
            const ActChannel<T> channel{mh, ml, sc, sh, static_cast<CT>(slope)};
            gated = act_gate<T>(A, channel.input(to_compute(p[l])), gated, channel.slope);
          }
          return std::fma(a, gated, std::fma(b, (to_compute(p[l]) - mh) - ml, k));
        });
  }
  if (stream) hwy::FlushStream();
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BN1D_KERNELS_SIMD_ROWS_INL_H_
