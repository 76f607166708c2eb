// SPDX-License-Identifier: MIT
// SIMD kernels for the cols layout: the C channels of every (n, l) are contiguous.
// Included once per Highway target by simd.cpp (hence the toggle guard, as in Highway's -inl.h).
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
#include "kernels/simd-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// ---- Cols layout: the C channels of every (n, l) are contiguous ------------------------------
// Row r = n·L + l of a cols view holds the C values x[n, :, l].

template <class T>
const T* cols_row(const View3& v, int64_t r) {
  return row_ptr<T>(v, r / v.L, 0, r % v.L);
}

// Per-thread float64 work arrays of the cols reductions (C values each), kept between calls.
HWY_INLINE double* cols_scratch(int64_t C) {
  thread_local std::vector<double> scratch;
  if (scratch.size() < static_cast<std::size_t>(2 * C))
    scratch.resize(static_cast<std::size_t>(2 * C));
  return scratch.data();
}

// Statistics of rows r0 … r1 − 1 for all channels, merged in order into mean[C], m2[C]: blocks of
// rows_per_block rows, each reduced in two passes that walk the block row by row (memory order)
// and accumulate per channel into float64 arrays: the block's sums, then its squared deviations
// from the block mean. Blocks are merged with Chan's formula, vectorized over channels.
template <class T>
void stats_cols_partition(const View3& x, int64_t r0, int64_t r1, int64_t rows_per_block,
                          double* mean, double* m2) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t C = x.C, vecC = C - C % N;
  std::fill_n(mean, C, 0.0);
  std::fill_n(m2, C, 0.0);
  double* bmean = cols_scratch(C);  // block sums, then block means
  double* bq = bmean + C;           // block sums of squared deviations
  double count = 0.0;
  for (int64_t b0 = r0; b0 < r1; b0 += rows_per_block) {
    const int64_t b1 = std::min(r1, b0 + rows_per_block);
    std::fill_n(bmean, C, 0.0);
    std::fill_n(bq, C, 0.0);
    const T* first = cols_row<T>(x, b0);     // sums of x − (the block's first row): see add_row
    for (int64_t r = b0 + 1; r < b1; ++r) {  // pass 1: sums
      const T* p = cols_row<T>(x, r);
      int64_t c = 0;
      for (; c < vecC; c += N) {
        hn::StoreU(hn::Add(hn::LoadU(d, bmean + c), hn::Sub(LoadD(p + c), LoadD(first + c))), d,
                   bmean + c);
      }
      for (; c < C; ++c) bmean[c] += static_cast<double>(p[c]) - static_cast<double>(first[c]);
    }
    const double nb = static_cast<double>(b1 - b0), n = count + nb;
    for (int64_t c = 0; c < C; ++c) bmean[c] = static_cast<double>(first[c]) + bmean[c] / nb;
    for (int64_t r = b0; r < b1; ++r) {  // pass 2: squared deviations from the block mean
      const T* p = cols_row<T>(x, r);
      int64_t c = 0;
      for (; c < vecC; c += N) {
        const VD dv = hn::Sub(LoadD(p + c), hn::LoadU(d, bmean + c));
        hn::StoreU(hn::MulAdd(dv, dv, hn::LoadU(d, bq + c)), d, bq + c);
      }
      for (; c < C; ++c) {
        const double dv = static_cast<double>(p[c]) - bmean[c];
        bq[c] += dv * dv;
      }
    }
    const VD wb = hn::Set(d, nb / n), wab = hn::Set(d, count * nb / n);
    int64_t c = 0;
    for (; c < vecC; c += N) {  // Chan merge of the block, vectorized over channels
      const VD pm = hn::LoadU(d, mean + c), delta = hn::Sub(hn::LoadU(d, bmean + c), pm);
      hn::StoreU(hn::MulAdd(delta, wb, pm), d, mean + c);
      hn::StoreU(hn::Add(hn::LoadU(d, m2 + c),
                         hn::MulAdd(hn::Mul(delta, delta), wab, hn::LoadU(d, bq + c))),
                 d, m2 + c);
    }
    for (; c < C; ++c) chan_merge(count, nb, bmean[c], bq[c], mean[c], m2[c]);
    count = n;
  }
}

// Σ dy and Σ dy · (x − mean) over rows r0 … r1 − 1 into sum_dy[C], sum_dy_xmu[C], walking the
// rows in memory order and accumulating per channel.
template <class T>
void backward_sums_cols_partition(const View3& dy, const View3& x, const double* mean, int64_t r0,
                                  int64_t r1, double* sum_dy, double* sum_dy_xmu) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t C = x.C, vecC = C - C % N;
  std::fill_n(sum_dy, C, 0.0);
  std::fill_n(sum_dy_xmu, C, 0.0);
  for (int64_t r = r0; r < r1; ++r) {
    const T* g = cols_row<T>(dy, r);
    const T* p = cols_row<T>(x, r);
    int64_t c = 0;
    for (; c < vecC; c += N) {
      const VD gv = LoadD(g + c);
      hn::StoreU(hn::Add(hn::LoadU(d, sum_dy + c), gv), d, sum_dy + c);
      const VD xm = hn::Sub(LoadD(p + c), hn::LoadU(d, mean + c));
      hn::StoreU(hn::MulAdd(gv, xm, hn::LoadU(d, sum_dy_xmu + c)), d, sum_dy_xmu + c);
    }
    for (; c < C; ++c) {
      const double gv = static_cast<double>(g[c]);
      sum_dy[c] += gv;
      sum_dy_xmu[c] += gv * (static_cast<double>(p[c]) - mean[c]);
    }
  }
}

// Elementwise op over units u0 … u1 − 1 of a cols view, in T's own lanes: f.vec(d, c, x, dy)
// gives the results for channels c … c + lanes − 1, f.scalar(c, x, dy) for one channel.
// - Output with contiguous channels too (out.sC == 1, e.g. (N, C) or channels-last): a unit is a
//   row r = n·L + l, read and written along C.
// - Output (N, C, L) with unit stride along L: a unit is a block of kChannelBlock channels of one
//   n; values are read along C and transposed through a small tile, so that each channel's
//   output is written as a sequential stream along L.
template <class T, class F>
void elementwise_cols(const Out3& out, const View3& x, const View3* dy, int64_t u0, int64_t u1, F f,
                      bool stream) {
  const hn::ScalableTag<T> d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t C = x.C, L = x.L;
  T* const base = static_cast<T*>(out.data);
  if (out.sC == 1) {
    for (int64_t r = u0; r < u1; ++r) {
      const int64_t n = r / L, l = r % L;
      const T* p = row_ptr<T>(x, n, 0, l);
      const T* g = dy ? row_ptr<T>(*dy, n, 0, l) : p;
      T* o = base + n * out.sN + l * out.sL;
      write_run(
          d, o, C, stream,
          [&](int64_t c) { return f.vec(d, c, hn::LoadU(d, p + c), hn::LoadU(d, g + c)); },
          [&](int64_t c) { return f.scalar(c, p[c], g[c]); });
    }
    if (stream) hwy::FlushStream();
    return;
  }
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  T lanes[HWY_LANES(T)];
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
          hn::StoreU(f.vec(d, c_begin + cv, hn::LoadU(d, p + cv), hn::LoadU(d, g + cv)), d, lanes);
          for (int64_t j = 0; j < N; ++j) tile[cv + j][i] = lanes[j];
        }
        for (int64_t cv = vec_width; cv < width; ++cv)
          tile[cv][i] = f.scalar(c_begin + cv, p[cv], g[cv]);
      }
      for (int64_t j = 0; j < width; ++j) {
        std::copy_n(tile[j], len, base + n * out.sN + (c_begin + j) * out.sC + l0);
      }
    }
  }
}

// y = ((x − m_hi) − m_lo) · s + b; P = [m_hi | m_lo | s | b], each C values of T.
template <class T>
struct NormalizeOp {
  const T* P;
  int64_t C;
  template <class D, class V>
  HWY_INLINE V vec(D d, int64_t c, V x, V) const {
    const V xm = hn::Sub(hn::Sub(x, hn::LoadU(d, P + c)), hn::LoadU(d, P + C + c));
    return hn::MulAdd(xm, hn::LoadU(d, P + 2 * C + c), hn::LoadU(d, P + 3 * C + c));
  }
  HWY_INLINE T scalar(int64_t c, T x, T) const {
    return std::fma((x - P[c]) - P[C + c], P[2 * C + c], P[3 * C + c]);
  }
};

// dx = a · dy + b · ((x − m_hi) − m_lo) + k; P = [m_hi | m_lo | a | b | k].
template <class T>
struct BackwardInputOp {
  const T* P;
  int64_t C;
  template <class D, class V>
  HWY_INLINE V vec(D d, int64_t c, V x, V g) const {
    const V xm = hn::Sub(hn::Sub(x, hn::LoadU(d, P + c)), hn::LoadU(d, P + C + c));
    return hn::MulAdd(hn::LoadU(d, P + 2 * C + c), g,
                      hn::MulAdd(hn::LoadU(d, P + 3 * C + c), xm, hn::LoadU(d, P + 4 * C + c)));
  }
  HWY_INLINE T scalar(int64_t c, T x, T g) const {
    return std::fma(P[2 * C + c], g, std::fma(P[3 * C + c], (x - P[c]) - P[C + c], P[4 * C + c]));
  }
};

template <class T>
void normalize_cols(const Out3& y, const View3& x, const T* P, int64_t u0, int64_t u1,
                    bool stream) {
  elementwise_cols<T>(y, x, nullptr, u0, u1, NormalizeOp<T>{P, x.C}, stream);
}

template <class T>
void backward_input_cols(const Out3& dx, const View3& dy, const View3& x, const T* P, int64_t u0,
                         int64_t u1, bool stream) {
  elementwise_cols<T>(dx, x, &dy, u0, u1, BackwardInputOp<T>{P, x.C}, stream);
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BN1D_KERNELS_SIMD_COLS_INL_H_
