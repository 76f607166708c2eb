// SPDX-License-Identifier: MIT
// SIMD kernels of Layout::UnitStrideC, the "cols" kernels: the C channels of every (n, l) are
// contiguous (sC == 1); they vectorize along C. Row r = n·L + l of such a view holds x[n, :, l].
// Included once per Highway target by the Highway TUs that use them (hence the toggle guard, as in
// Highway's -inl.h).
#if defined(BN1D_KERNELS_SIMD_COLS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BN1D_KERNELS_SIMD_COLS_INL_H_
#undef BN1D_KERNELS_SIMD_COLS_INL_H_
#else
#define BN1D_KERNELS_SIMD_COLS_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "hwy/highway.h"
#include "kernels/blocking.hpp"
#include "kernels/elementwise_params.hpp"
#include "kernels/simd-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// (n, l) of row r = n·L + l of a cols view, then of each next row, without a division per row.
struct RowIndex {
  int64_t L, n, l;
  RowIndex(int64_t r, int64_t L_) : L(L_), n(r / L_), l(r % L_) {}
  void next() {
    if (++l == L) l = 0, ++n;
  }
};

// Vectors of float64 lanes per channel chunk of the cols statistics: a chunk's 3·kChunk
// accumulators (first row, Σ d, Σ d²) stay in registers while it walks down the rows of a block,
// so 8 with 32 vector registers (AVX-512), else 4: docs/tuning.md#stats-chunk.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
constexpr int kChunk = 8;
#else
constexpr int kChunk = 4;
#endif
// The statistics walk a block chunk by chunk, which the hardware prefetchers do not follow: from
// DRAM each row's chunk is prefetched (into L2) about kAheadBytes of rows ahead:
// docs/tuning.md#stats-prefetch.
constexpr int64_t kAheadBytes = 48 * 1024;

// Rows ahead of the one being reduced to prefetch, for rows of C values of T.
template <class T>
int64_t rows_ahead(int64_t C) {
  return std::max<int64_t>(4, kAheadBytes / (C * static_cast<int64_t>(sizeof(T))));
}

// Prefetches (into L2) values c … c + count − 1 of a row, when there is one.
template <class T>
HWY_INLINE void prefetch_l2(const T* row, int64_t c, int64_t count) {
  if (row == nullptr) return;
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t i = 0; i < count; i += kLine) __builtin_prefetch(row + c + i, 0, 2);
}

// Pointers to rows b0 … b1 − 1 (at most kMaxRowsPerBlock) of a cols view, and to the rows
// `ahead` further on (nullptr past r_end, or everywhere when ahead is 0: no prefetch).
template <class T>
HWY_INLINE void cols_rows(const View3& v, int64_t b0, int64_t b1, int64_t ahead, int64_t r_end,
                          const T** rows, const T** rows_ahead) {
  RowIndex at(b0, v.L), at_ahead(b0 + ahead, v.L);
  for (int64_t r = b0; r < b1; ++r, at.next(), at_ahead.next()) {
    rows[r - b0] = row_ptr<T>(v, at.n, 0, at.l);
    rows_ahead[r - b0] =
        ahead > 0 && r + ahead < r_end ? row_ptr<T>(v, at_ahead.n, 0, at_ahead.l) : nullptr;
  }
}

// One block's statistics for channels c … c + K·lanes − 1, merged into mean and m2 (count
// values before it). One pass accumulates, per channel, s = Σ d and q = Σ d² of the shifted values
// d = x − x₀ (x₀: the block's first row); then mean_b = x₀ + s / n and M2_b = q − s · s / n.
// Shifting by a value of the block bounds the cancellation: q = M2_b + n · (x₀ − mean_b)² and
// (x₀ − mean_b)² ≤ M2_b, so q ≤ (n + 1) · M2_b and M2_b keeps all but log2(n + 1) ≈ 6 of float64's
// 53 bits (docs/math.md). The block is then merged with Chan's formula.
template <int K, class T>
HWY_INLINE void stats_cols_chunk(const T* const* rows, const T* const* ahead, int64_t nb, int64_t c,
                                 double count, double* mean, double* m2) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  VD first[K], s[K], q[K];
  for (int k = 0; k < K; ++k) {
    first[k] = LoadD(rows[0] + c + k * N);
    s[k] = hn::Zero(d), q[k] = hn::Zero(d);
  }
  prefetch_l2(ahead[0], c, K * N);
  for (int64_t r = 1; r < nb; ++r) {
    prefetch_l2(ahead[r], c, K * N);
    for (int k = 0; k < K; ++k) {
      const VD dv = SubOnFma(LoadD(rows[r] + c + k * N), first[k]);
      s[k] = hn::Add(s[k], dv);
      q[k] = hn::MulAdd(dv, dv, q[k]);
    }
  }
  const double n = count + static_cast<double>(nb);
  const VD nbv = hn::Set(d, static_cast<double>(nb));
  const VD wb = hn::Set(d, static_cast<double>(nb) / n);
  const VD wab = hn::Set(d, count * static_cast<double>(nb) / n);
  for (int k = 0; k < K; ++k) {
    const VD shift = hn::Div(s[k], nbv);  // mean_b − x₀
    const VD bmean = hn::Add(first[k], shift);
    const VD bq = hn::Max(hn::NegMulAdd(s[k], shift, q[k]), hn::Zero(d));
    double* pm = mean + c + k * N;
    double* pq = m2 + c + k * N;
    if (count == 0.0) {
      hn::StoreU(bmean, d, pm);
      hn::StoreU(bq, d, pq);
      continue;
    }
    const VD old = hn::LoadU(d, pm), delta = hn::Sub(bmean, old);
    hn::StoreU(hn::MulAdd(delta, wb, old), d, pm);
    hn::StoreU(hn::Add(hn::LoadU(d, pq), hn::MulAdd(hn::Mul(delta, delta), wab, bq)), d, pq);
  }
}

// Statistics of rows r0 … r1 − 1 for channels c0 … c1 − 1, merged in order into mean[c], m2[c]:
// blocks of `block` rows (at most kMaxRowsPerBlock), each reduced in one pass per chunk of channels
// (stats_cols_chunk; leftover channels one by one, with the same arithmetic), and merged into the
// running result with Chan's formula (r0 < r1: every partition holds a block, see
// ColsPartitions). The first block is stored as it is, what a merge into zeros gives, bit for bit
// (docs/tuning.md#stats-first-block). With `prefetch` (data from DRAM) rows are prefetched ahead
// (kAheadBytes).
template <class T>
void stats_cols_partition(const View3& x, int64_t r0, int64_t r1, int64_t block, int64_t c0,
                          int64_t c1, bool prefetch, double* mean, double* m2) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const T* rows[kMaxRowsPerBlock];
  const T* ahead[kMaxRowsPerBlock];
  const int64_t distance = prefetch ? rows_ahead<T>(c1 - c0) : 0;
  double count = 0.0;
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    const int64_t b1 = std::min(r1, b0 + block), nb = b1 - b0;
    cols_rows<T>(x, b0, b1, distance, r1, rows, ahead);
    int64_t c = c0;
    for (; c + kChunk * N <= c1; c += kChunk * N)
      stats_cols_chunk<kChunk>(rows, ahead, nb, c, count, mean, m2);
    if constexpr (kChunk > 4) {
      for (; c + 4 * N <= c1; c += 4 * N) stats_cols_chunk<4>(rows, ahead, nb, c, count, mean, m2);
    }
    for (; c + N <= c1; c += N) stats_cols_chunk<1>(rows, ahead, nb, c, count, mean, m2);
    for (; c < c1; ++c) {  // the same arithmetic, one channel
      const double first = widen(rows[0][c]);
      double sum = 0.0, q = 0.0;
      for (int64_t r = 1; r < nb; ++r) {
        const double dv = widen(rows[r][c]) - first;
        sum += dv;
        q = std::fma(dv, dv, q);
      }
      const double shift = sum / static_cast<double>(nb);
      const double bq = std::max(std::fma(-sum, shift, q), 0.0);
      if (count == 0.0) {
        mean[c] = first + shift, m2[c] = bq;
        continue;
      }
      chan_merge(count, static_cast<double>(nb), first + shift, bq, mean[c], m2[c]);
    }
    count += static_cast<double>(nb);
  }
}

// Σ dy and Σ dy · (x − mean) of the R rows g[i], p[i] (dy and x) for channels c0 … c1 − 1, added
// to sum_dy[c] and sum_dy_xmu[c] row after row (vectors up to vec_end, then one channel at a time).
// With an activation, dy is gated by the channels' intervals (SumsGate).
template <int R, class T, Activation A>
HWY_INLINE void backward_sums_cols_rows(const T* const* g, const T* const* p, const double* mean,
                                        const Act& act, int64_t c0, int64_t c1, int64_t vec_end,
                                        double* sum_dy, double* sum_dy_xmu) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t c = c0; c < vec_end; c += N) {
    const VD mu = hn::LoadU(d, mean + c);
    SumsGate<T, A> gate{};
    if constexpr (A != Activation::None) gate = SumsGate<T, A>::of_lanes(act, c);
    VD sdy = hn::LoadU(d, sum_dy + c), sxm = hn::LoadU(d, sum_dy_xmu + c);
    for (int i = 0; i < R; ++i) {
      const VD xv = LoadD(p[i] + c);
      const VD xm = hn::Sub(xv, mu);
      const VD gv = gate(xv, LoadD(g[i] + c));
      sdy = hn::Add(sdy, gv);
      sxm = hn::MulAdd(gv, xm, sxm);
    }
    hn::StoreU(sdy, d, sum_dy + c);
    hn::StoreU(sxm, d, sum_dy_xmu + c);
  }
  for (int i = 0; i < R; ++i) {
    for (int64_t c = vec_end; c < c1; ++c) {
      const double gv = gate_scalar<T, A>(act, c, p[i][c], g[i][c]);
      sum_dy[c] += gv;
      sum_dy_xmu[c] += gv * (widen(p[i][c]) - mean[c]);
    }
  }
}

// Σ dy and Σ dy · (x − mean) over rows r0 … r1 − 1, channels c0 … c1 − 1, into sum_dy[c] and
// sum_dy_xmu[c] (zeroed first), accumulated per channel in row order. The rows are walked in
// memory order with the sums in L1 (docs/tuning.md#cols-sums-walk), `step` (1 or 4) at a time, in
// channel tiles of at most `tile` channels (c0 and tile multiples of the lane count); how they are
// walked changes no bit. Step 4 loads and stores the sums once per four rows; tiles keep the sums
// and the mean in L1 (simd_schedule.cpp chooses: docs/tuning.md#grouped-rows, #sums-tiles).
template <class T, Activation A>
void backward_sums_cols_partition(const View3& dy, const View3& x, const double* mean,
                                  const Act& act, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                                  int step, int64_t tile, double* sum_dy, double* sum_dy_xmu) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  std::fill(sum_dy + c0, sum_dy + c1, 0.0);
  std::fill(sum_dy_xmu + c0, sum_dy_xmu + c1, 0.0);
  for (int64_t t0 = c0; t0 < c1; t0 += tile) {
    const int64_t t1 = std::min(c1, t0 + tile), vec_end = t1 - (t1 - t0) % N;
    RowIndex at(r0, x.L);
    int64_t r = r0;
    const T* g[4];
    const T* p[4];
    if (step == 4) {
      for (; r + 4 <= r1; r += 4) {
        for (int i = 0; i < 4; ++i, at.next())
          g[i] = row_ptr<T>(dy, at.n, 0, at.l), p[i] = row_ptr<T>(x, at.n, 0, at.l);
        backward_sums_cols_rows<4, T, A>(g, p, mean, act, t0, t1, vec_end, sum_dy, sum_dy_xmu);
      }
    }
    for (; r < r1; ++r, at.next()) {
      g[0] = row_ptr<T>(dy, at.n, 0, at.l), p[0] = row_ptr<T>(x, at.n, 0, at.l);
      backward_sums_cols_rows<1, T, A>(g, p, mean, act, t0, t1, vec_end, sum_dy, sum_dy_xmu);
    }
  }
}

// Rows of a cols view transformed together by elementwise_cols when the output stays in cache:
// each vector of per-channel parameters is loaded once for the group (for in-cache data the
// parameter loads, not the data, bound a one-row loop; streamed outputs are bound by memory and
// go one row at a time, as interleaved non-temporal row streams are slower).
constexpr int64_t kRowGroup = 4;

// f applied to rows r … r + R − 1 of x (and dy), written to the same rows of out (out.sC == 1).
template <int R, class T, class D, class F>
HWY_INLINE void elementwise_rows_group(D d, const Out3& out, const View3& x, const View3* dy,
                                       int64_t r, const F& f) {
  using V = hn::Vec<D>;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t C = x.C, L = x.L;
  const T* p[R];
  const T* g[R];
  T* o[R];
  for (int i = 0; i < R; ++i) {
    const int64_t n = (r + i) / L, l = (r + i) % L;
    p[i] = row_ptr<T>(x, n, 0, l);
    g[i] = dy ? row_ptr<T>(*dy, n, 0, l) : p[i];
    o[i] = static_cast<T*>(out.data) + n * out.sN + l * out.sL;
  }
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    V v[R];
    for (int i = 0; i < R; ++i) v[i] = f.vec(d, c, LoadC(d, p[i] + c), LoadC(d, g[i] + c));
    for (int i = 0; i < R; ++i) StoreC(d, v[i], o[i] + c);
  }
  if constexpr (kMaskedTails && !kIs16Bit<T>) {  // f.vec's parameter loads may read past C
    if (c < C) {                                 // (P is padded)
      const auto m = hn::FirstN(d, static_cast<size_t>(C - c));
      V v[R];
      for (int i = 0; i < R; ++i)
        v[i] = f.vec(d, c, hn::MaskedLoad(m, d, p[i] + c), hn::MaskedLoad(m, d, g[i] + c));
      for (int i = 0; i < R; ++i) hn::BlendedStore(v[i], m, d, o[i] + c);
    }
  } else {
    for (; c < C; ++c) {
      for (int i = 0; i < R; ++i)
        o[i][c] = from_compute<T>(f.scalar(c, to_compute(p[i][c]), to_compute(g[i][c])));
    }
  }
}

// Elementwise op over units u0 … u1 − 1 of a cols view, in lanes of ComputeOf<T> (T's own;
// float64 for the 16-bit types): f.vec(d, c, x, dy) gives the results for channels
// c … c + lanes − 1, f.scalar(c, x, dy) for one channel.
// - Output with contiguous channels too (out.sC == 1, e.g. (N, C) or channels-last): a unit is a
//   row r = n·L + l, read and written along C; kRowGroup rows at a time unless streamed. Streamed
//   rows go one at a time in memory order, which the hardware prefetchers follow
//   (docs/tuning.md#streamed-rows).
// - Output (N, C, L) with unit stride along L: a unit is a block of kChannelBlock channels of one
//   n; values are read along C and transposed through a small tile, so that each channel's
//   output is written as a sequential stream along L.
template <class T, class F>
void elementwise_cols(const Out3& out, const View3& x, const View3* dy, int64_t u0, int64_t u1, F f,
                      bool stream) {
  using CT = ComputeOf<T>;
  const hn::ScalableTag<CT> d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t C = x.C, L = x.L;
  T* const base = static_cast<T*>(out.data);
  if (out.sC == 1 && stream) {
    for (int64_t r = u0; r < u1; ++r) {
      const int64_t n = r / L, l = r % L;
      const T* p = row_ptr<T>(x, n, 0, l);
      const T* g = dy ? row_ptr<T>(*dy, n, 0, l) : p;
      T* o = base + n * out.sN + l * out.sL;
      write_run(
          d, o, C, stream,
          [&](int64_t c, auto load) { return f.vec(d, c, load(p + c), load(g + c)); },
          [&](int64_t c) { return f.scalar(c, to_compute(p[c]), to_compute(g[c])); });
    }
    hwy::FlushStream();
    return;
  }
  if (out.sC == 1) {
    int64_t r = u0;
    for (; r + kRowGroup <= u1; r += kRowGroup)
      elementwise_rows_group<kRowGroup, T>(d, out, x, dy, r, f);
    for (; r < u1; ++r) elementwise_rows_group<1, T>(d, out, x, dy, r, f);
    return;
  }
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  T lanes[HWY_LANES(CT)];
  T tile[kChannelBlock][kTileL];  // [channel - c_begin][l - l0]
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = u / blocks, c_begin = (u % blocks) * kChannelBlock;
    const int64_t width = std::min(C - c_begin, kChannelBlock);
    const int64_t vec_width = width - width % N;  // channels done with vectors
    for (int64_t l0 = 0; l0 < L; l0 += kTileL) {
      const int64_t len = std::min(L - l0, kTileL);
      for (int64_t i = 0; i < len; ++i) {  // each row's channels c_begin … + width, read once
        const T* p = row_ptr<T>(x, n, c_begin, l0 + i);
        const T* g = dy ? row_ptr<T>(*dy, n, c_begin, l0 + i) : p;
        for (int64_t cv = 0; cv < vec_width; cv += N) {
          StoreC(d, f.vec(d, c_begin + cv, LoadC(d, p + cv), LoadC(d, g + cv)), lanes);
          for (int64_t j = 0; j < N; ++j) tile[cv + j][i] = lanes[j];
        }
        for (int64_t cv = vec_width; cv < width; ++cv)
          tile[cv][i] =
              from_compute<T>(f.scalar(c_begin + cv, to_compute(p[cv]), to_compute(g[cv])));
      }
      for (int64_t j = 0; j < width; ++j) {
        std::copy_n(tile[j], len, base + n * out.sN + (c_begin + j) * out.sC + l0);
      }
    }
  }
}

// The elementwise ops of the cols kernels, on a parameter block (elementwise_params.hpp). Each op
// has an unfolded and a folded struct on the same column type, separate on purpose:
// docs/tuning.md#folded-ops-separate.

// y = ((x − mean_hi) − mean_lo) · scale + shift.
template <class T>
struct NormalizeOp {
  NormalizeColumns<T, false> p;
  template <class D, class V>
  HWY_INLINE V vec(D d, int64_t c, V x, V) const {
    const V xm = SubMean(x, hn::LoadU(d, p.mean_hi(c)), hn::LoadU(d, p.mean_lo(c)));
    return hn::MulAdd(xm, hn::LoadU(d, p.scale(c)), hn::LoadU(d, p.shift(c)));
  }
  HWY_INLINE T scalar(int64_t c, T x, T) const {
    return std::fma((x - p.mean_hi_at(c)) - p.mean_lo_at(c), p.scale_at(c), p.shift_at(c));
  }
};

// y = (x − mean_hi) · scale + shift, shift with mean_lo folded in.
template <class T>
struct NormalizeFoldedOp {
  NormalizeColumns<T, true> p;
  template <class D, class V>
  HWY_INLINE V vec(D d, int64_t c, V x, V) const {
    const V xm = hn::Sub(x, hn::LoadU(d, p.mean_hi(c)));
    return hn::MulAdd(xm, hn::LoadU(d, p.scale(c)), hn::LoadU(d, p.shift(c)));
  }
  HWY_INLINE T scalar(int64_t c, T x, T) const {
    return std::fma(x - p.mean_hi_at(c), p.scale_at(c), p.shift_at(c));
  }
};

// dx = a · dy + b · ((x − mean_hi) − mean_lo) + k.
template <class T>
struct BackwardInputOp {
  BackwardInputColumns<T, false> p;
  template <class D, class V>
  HWY_INLINE V vec(D d, int64_t c, V x, V g) const {
    const V xm = SubMean(x, hn::LoadU(d, p.mean_hi(c)), hn::LoadU(d, p.mean_lo(c)));
    return hn::MulAdd(hn::LoadU(d, p.a(c)), g,
                      hn::MulAdd(hn::LoadU(d, p.b(c)), xm, hn::LoadU(d, p.k(c))));
  }
  HWY_INLINE T scalar(int64_t c, T x, T g) const {
    return std::fma(p.a_at(c), g,
                    std::fma(p.b_at(c), (x - p.mean_hi_at(c)) - p.mean_lo_at(c), p.k_at(c)));
  }
};

// dx = a · dy + b · (x − mean_hi) + k, k with mean_lo folded in.
template <class T>
struct BackwardInputFoldedOp {
  BackwardInputColumns<T, true> p;
  template <class D, class V>
  HWY_INLINE V vec(D d, int64_t c, V x, V g) const {
    const V xm = hn::Sub(x, hn::LoadU(d, p.mean_hi(c)));
    return hn::MulAdd(hn::LoadU(d, p.a(c)), g,
                      hn::MulAdd(hn::LoadU(d, p.b(c)), xm, hn::LoadU(d, p.k(c))));
  }
  HWY_INLINE T scalar(int64_t c, T x, T g) const {
    return std::fma(p.a_at(c), g, std::fma(p.b_at(c), x - p.mean_hi_at(c), p.k_at(c)));
  }
};

// y = act(z), z = ((x − mean_hi) − mean_lo) · scale + shift formed as ActChannel::input forms
// it (T: the storage type, whose smallest value sets the activation's threshold).
template <class T, Activation A>
struct NormalizeActOp {
  using CT = ComputeOf<T>;
  NormalizeColumns<CT, false> p;
  CT slope;
  template <class D, class V>
  HWY_INLINE V vec(D d, int64_t c, V x, V) const {
    const V xm = SubMean(x, hn::LoadU(d, p.mean_hi(c)), hn::LoadU(d, p.mean_lo(c)));
    const V z = ActInput(xm, hn::LoadU(d, p.scale(c)), hn::LoadU(d, p.shift(c)));
    return Activate<T, A>(z, hn::Set(d, slope));
  }
  HWY_INLINE CT scalar(int64_t c, CT x, CT) const {
    const ActChannel<T> channel{p.mean_hi_at(c), p.mean_lo_at(c), p.scale_at(c), p.shift_at(c),
                                slope};
    return act_value<T>(A, channel.input(x), slope);
  }
};

// dx = a · dy' + b · ((x − mean_hi) − mean_lo) + k, dy' = dy gated at z (BackwardInputOp's
// arithmetic; the block of backward_input_act_block).
template <class T, Activation A>
struct BackwardInputActOp {
  using CT = ComputeOf<T>;
  BackwardInputColumns<CT, false> p;
  CT slope;
  template <class D, class V>
  HWY_INLINE V vec(D d, int64_t c, V x, V g) const {
    const V xm = SubMean(x, hn::LoadU(d, p.mean_hi(c)), hn::LoadU(d, p.mean_lo(c)));
    const V z = ActInput(xm, hn::LoadU(d, p.scale(c)), hn::LoadU(d, p.shift(c)));
    const V gated = Gate<T, A>(z, g, hn::Set(d, slope));
    return hn::MulAdd(hn::LoadU(d, p.a(c)), gated,
                      hn::MulAdd(hn::LoadU(d, p.b(c)), xm, hn::LoadU(d, p.k(c))));
  }
  HWY_INLINE CT scalar(int64_t c, CT x, CT g) const {
    const ActChannel<T> channel{p.mean_hi_at(c), p.mean_lo_at(c), p.scale_at(c), p.shift_at(c),
                                slope};
    const CT gated = act_gate<T>(A, channel.input(x), g, slope);
    return std::fma(p.a_at(c), gated,
                    std::fma(p.b_at(c), (x - p.mean_hi_at(c)) - p.mean_lo_at(c), p.k_at(c)));
  }
};

// y over units u0 … u1 − 1 (see elementwise_cols), the parameters at P in the form `block` says.
template <class T, Activation A>
void normalize_cols(const Out3& y, const View3& x, const ComputeOf<T>* P, const ParamBlock& block,
                    double slope, int64_t u0, int64_t u1, bool stream) {
  using CT = ComputeOf<T>;
  if constexpr (A != Activation::None)
    elementwise_cols<T>(y, x, nullptr, u0, u1,
                        NormalizeActOp<T, A>{{{P, x.C}}, static_cast<CT>(slope)}, stream);
  else if (block.folded())
    elementwise_cols<T>(y, x, nullptr, u0, u1, NormalizeFoldedOp<CT>{{{P, x.C}}}, stream);
  else
    elementwise_cols<T>(y, x, nullptr, u0, u1, NormalizeOp<CT>{{{P, x.C}}}, stream);
}

// dx over units u0 … u1 − 1, as normalize_cols.
template <class T, Activation A>
void backward_input_cols(const Out3& dx, const View3& dy, const View3& x, const ComputeOf<T>* P,
                         const ParamBlock& block, double slope, int64_t u0, int64_t u1,
                         bool stream) {
  using CT = ComputeOf<T>;
  if constexpr (A != Activation::None)
    elementwise_cols<T>(dx, x, &dy, u0, u1,
                        BackwardInputActOp<T, A>{{{P, x.C}}, static_cast<CT>(slope)}, stream);
  else if (block.folded())
    elementwise_cols<T>(dx, x, &dy, u0, u1, BackwardInputFoldedOp<CT>{{{P, x.C}}}, stream);
  else
    elementwise_cols<T>(dx, x, &dy, u0, u1, BackwardInputOp<CT>{{{P, x.C}}}, stream);
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BN1D_KERNELS_SIMD_COLS_INL_H_
