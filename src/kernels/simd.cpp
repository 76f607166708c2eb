// SPDX-License-Identifier: MIT
// SIMD kernels: one Highway translation unit compiled for every target, dispatched at run time.
// Per-target code below processes one unit of work (a channel, a partition of rows, a range of
// output rows) serially; the dispatcher at the end splits the work into units that depend only
// on the shape (never on the thread count) and runs them on OpenMP threads.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/simd.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include <algorithm>
#include <cmath>
#include <cstdint>
// clang-format on
#include "hwy/highway.h"
#include "kernels/simd-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {

// Values per statistics block: small enough that a block's second pass hits L1/L2.
constexpr int64_t kBlock = 4096;

template <class T>
const T* row_ptr(const View3& v, int64_t n, int64_t c, int64_t l) {
  return static_cast<const T*>(v.data) + n * v.sN + c * v.sC + l * v.sL;
}

// Chan's merge of (nb, mean_b, m2_b) into (na, mean, m2); na is the count before the merge.
HWY_INLINE void chan_merge(double na, double nb, double mean_b, double m2_b, double& mean, double& m2) {
  const double n = na + nb, delta = mean_b - mean;
  mean += delta * (nb / n);
  m2 += m2_b + delta * delta * (na * nb / n);
}

// ---- Rows layout: (n, c) rows of L contiguous values ---------------------------------------

// Four independent accumulators hide the latency of float64 adds.
struct Acc4 {
  VD a0, a1, a2, a3;
  Acc4() : a0(hn::Zero(DD())), a1(hn::Zero(DD())), a2(hn::Zero(DD())), a3(hn::Zero(DD())) {}
  double sum() const { return ReduceSum(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))); }
};

// acc += the full vectors of p[0, len); returns the scalar sum of the tail.
template <class T>
HWY_INLINE double add_row(Acc4& acc, const T* p, int64_t len) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  int64_t i = 0;
  for (; i + 4 * N <= len; i += 4 * N) {
    acc.a0 = hn::Add(acc.a0, LoadD(p + i));
    acc.a1 = hn::Add(acc.a1, LoadD(p + i + N));
    acc.a2 = hn::Add(acc.a2, LoadD(p + i + 2 * N));
    acc.a3 = hn::Add(acc.a3, LoadD(p + i + 3 * N));
  }
  for (; i + N <= len; i += N) acc.a0 = hn::Add(acc.a0, LoadD(p + i));
  double tail = 0.0;
  for (; i < len; ++i) tail += static_cast<double>(p[i]);
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
    const double dv = static_cast<double>(p[i]) - mean;
    tail += dv * dv;
  }
  return tail;
}

// Statistics of channel c. Blocks: row pieces of kBlock values when L ≥ kBlock, else groups of
// whole rows; each block two-pass (sum, then squared deviations from its own mean), merged in
// order.
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
      Acc4 sum;
      double tail = 0.0;
      for (int64_t n = n0; n < n1; ++n) tail += add_row(sum, row_ptr<T>(x, n, c, l0), len);
      const double nb = static_cast<double>((n1 - n0) * len);
      const double mean_b = (sum.sum() + tail) / nb;
      Acc4 sq;
      tail = 0.0;
      for (int64_t n = n0; n < n1; ++n) tail += add_row_sqdev(sq, row_ptr<T>(x, n, c, l0), len, mean_b);
      chan_merge(count, nb, mean_b, sq.sum() + tail, mean, m2);
      count += nb;
    }
  }
  *mean_out = mean;
  *m2_out = m2;
}

// Statistics of units u0 … u1 − 1 for all channels, where unit u = n · pieces + piece covers
// the values l0 … l0 + kBlock − 1 of row n of every channel: each (n, c, piece) block is reduced
// two-pass while in cache and merged in order into mean[C], m2[C]. Memory is walked in order.
template <class T>
void stats_rows_partition(const View3& x, int64_t u0, int64_t u1, double* mean, double* m2) {
  const int64_t pieces = (x.L + kBlock - 1) / kBlock;
  std::fill_n(mean, x.C, 0.0);
  std::fill_n(m2, x.C, 0.0);
  double count = 0.0;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = u / pieces, l0 = (u % pieces) * kBlock, len = std::min(kBlock, x.L - l0);
    const double nb = static_cast<double>(len);
    for (int64_t c = 0; c < x.C; ++c) {
      const T* p = row_ptr<T>(x, n, c, l0);
      Acc4 sum;
      const double tail_sum = add_row(sum, p, len);
      const double mean_b = (sum.sum() + tail_sum) / nb;
      Acc4 sq;
      const double tail = add_row_sqdev(sq, p, len, mean_b);
      chan_merge(count, nb, mean_b, sq.sum() + tail, mean[c], m2[c]);
    }
    count += nb;
  }
}

// Σ dy and Σ dy · (x − mean) over units u0 … u1 − 1 (as in stats_rows_partition), into
// sum_dy[C], sum_dy_xmu[C].
template <class T>
void backward_sums_rows_partition(const View3& dy, const View3& x, const double* mean, int64_t u0,
                                  int64_t u1, double* sum_dy, double* sum_dy_xmu) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const int64_t pieces = (x.L + kBlock - 1) / kBlock;
  std::fill_n(sum_dy, x.C, 0.0);
  std::fill_n(sum_dy_xmu, x.C, 0.0);
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = u / pieces, l0 = (u % pieces) * kBlock, len = std::min(kBlock, x.L - l0);
    for (int64_t c = 0; c < x.C; ++c) {
      const T* g = row_ptr<T>(dy, n, c, l0);
      const T* p = row_ptr<T>(x, n, c, l0);
      const VD m = hn::Set(DD(), mean[c]);
      VD s0 = hn::Zero(DD()), s1 = hn::Zero(DD()), sx0 = hn::Zero(DD()), sx1 = hn::Zero(DD());
      int64_t l = 0;
      for (; l + 2 * N <= len; l += 2 * N) {
        const VD g0 = LoadD(g + l), g1 = LoadD(g + l + N);
        s0 = hn::Add(s0, g0);
        s1 = hn::Add(s1, g1);
        sx0 = hn::MulAdd(g0, hn::Sub(LoadD(p + l), m), sx0);
        sx1 = hn::MulAdd(g1, hn::Sub(LoadD(p + l + N), m), sx1);
      }
      for (; l + N <= len; l += N) {
        const VD g0 = LoadD(g + l);
        s0 = hn::Add(s0, g0);
        sx0 = hn::MulAdd(g0, hn::Sub(LoadD(p + l), m), sx0);
      }
      double s = ReduceSum(hn::Add(s0, s1)), sx = ReduceSum(hn::Add(sx0, sx1));
      for (; l < len; ++l) {
        s += static_cast<double>(g[l]);
        sx += static_cast<double>(g[l]) * (static_cast<double>(p[l]) - mean[c]);
      }
      sum_dy[c] += s;
      sum_dy_xmu[c] += sx;
    }
  }
}

// y rows i0 … i1 − 1 (i = n·C + c) of the contiguous output: y = (x − mean) · scale + shift.
template <class T>
void normalize_rows(T* y, const View3& x, const double* mean, const double* scale,
                    const double* shift, int64_t i0, int64_t i1) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const int64_t L = x.L;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t n = i / x.C, c = i % x.C;
    const T* p = row_ptr<T>(x, n, c, 0);
    T* out = y + i * L;
    const VD m = hn::Set(DD(), mean[c]), s = hn::Set(DD(), scale[c]), b = hn::Set(DD(), shift[c]);
    int64_t l = 0;
    for (; l + N <= L; l += N) StoreD(hn::MulAdd(hn::Sub(LoadD(p + l), m), s, b), out + l);
    for (; l < L; ++l) out[l] = static_cast<T>(std::fma(static_cast<double>(p[l]) - mean[c], scale[c], shift[c]));
  }
}

// Σ dy and Σ dy · (x − mean) of channel c, accumulated row by row in a fixed order.
template <class T>
void backward_sums_rows_channel(const View3& dy, const View3& x, const double* mean, int64_t c,
                                double* sum_dy, double* sum_dy_xmu) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const VD m = hn::Set(DD(), mean[c]);
  VD s = hn::Zero(DD()), sx = hn::Zero(DD());
  double s_tail = 0.0, sx_tail = 0.0;
  for (int64_t n = 0; n < x.N; ++n) {
    const T* g = row_ptr<T>(dy, n, c, 0);
    const T* p = row_ptr<T>(x, n, c, 0);
    int64_t l = 0;
    for (; l + N <= x.L; l += N) {
      const VD gv = LoadD(g + l);
      s = hn::Add(s, gv);
      sx = hn::MulAdd(gv, hn::Sub(LoadD(p + l), m), sx);
    }
    for (; l < x.L; ++l) {
      s_tail += static_cast<double>(g[l]);
      sx_tail += static_cast<double>(g[l]) * (static_cast<double>(p[l]) - mean[c]);
    }
  }
  *sum_dy = ReduceSum(s) + s_tail;
  *sum_dy_xmu = ReduceSum(sx) + sx_tail;
}

// dx rows i0 … i1 − 1: dx = a · dy + b · (x − mean) + k.
template <class T>
void backward_input_rows(T* dx, const View3& dy, const View3& x, const double* mean,
                         const double* a, const double* b, const double* k, int64_t i0, int64_t i1) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const int64_t L = x.L;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t n = i / x.C, c = i % x.C;
    const T* g = row_ptr<T>(dy, n, c, 0);
    const T* p = row_ptr<T>(x, n, c, 0);
    T* out = dx + i * L;
    const VD m = hn::Set(DD(), mean[c]), av = hn::Set(DD(), a[c]), bv = hn::Set(DD(), b[c]),
             kv = hn::Set(DD(), k[c]);
    int64_t l = 0;
    for (; l + N <= L; l += N) {
      StoreD(hn::MulAdd(av, LoadD(g + l), hn::MulAdd(bv, hn::Sub(LoadD(p + l), m), kv)), out + l);
    }
    for (; l < L; ++l) {
      out[l] = static_cast<T>(std::fma(a[c], static_cast<double>(g[l]),
                                       std::fma(b[c], static_cast<double>(p[l]) - mean[c], k[c])));
    }
  }
}

// ---- Cols layout: the C channels of every (n, l) are contiguous ------------------------------
// Row r = n·L + l of a cols view holds the C values x[n, :, l].

// Most rows a statistics block can have (see rows_per_block in the dispatcher).
constexpr int64_t kMaxRowsPerBlock = 256;
// Channels-last output (see elementwise_cols): units of kChannelBlock channels of one n,
// transposed through tiles of kTileL values of l.
constexpr int64_t kChannelBlock = 16;
constexpr int64_t kTileL = 64;

template <class T>
const T* cols_row(const View3& v, int64_t r) {
  return row_ptr<T>(v, r / v.L, 0, r % v.L);
}

// Statistics of rows r0 … r1 − 1 for all channels: blocks of rows_per_block rows, each
// two-pass per group of channels, merged in order into mean[C], m2[C].
template <class T>
void stats_cols_partition(const View3& x, int64_t r0, int64_t r1, int64_t rows_per_block,
                          double* mean, double* m2) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const int64_t C = x.C;
  const DD d;
  std::fill_n(mean, C, 0.0);
  std::fill_n(m2, C, 0.0);
  const T* rows[kMaxRowsPerBlock];
  double count = 0.0;
  for (int64_t b0 = r0; b0 < r1; b0 += rows_per_block) {
    const int64_t nrows = std::min(r1 - b0, rows_per_block);
    for (int64_t i = 0; i < nrows; ++i) rows[i] = cols_row<T>(x, b0 + i);
    const double nb = static_cast<double>(nrows), n = count + nb;
    const VD vnb = hn::Set(d, nb), wb = hn::Set(d, nb / n), wab = hn::Set(d, count * nb / n);
    auto merge = [&](int64_t c, VD mb, VD q) {  // Chan, vectorized over channels
      const VD pm = hn::LoadU(d, mean + c), delta = hn::Sub(mb, pm);
      hn::StoreU(hn::MulAdd(delta, wb, pm), d, mean + c);
      hn::StoreU(hn::Add(hn::LoadU(d, m2 + c), hn::MulAdd(hn::Mul(delta, delta), wab, q)), d, m2 + c);
    };
    int64_t c = 0;
    for (; c + 2 * N <= C; c += 2 * N) {  // two independent chains per row
      VD s0 = hn::Zero(d), s1 = hn::Zero(d);
      for (int64_t i = 0; i < nrows; ++i) {
        s0 = hn::Add(s0, LoadD(rows[i] + c));
        s1 = hn::Add(s1, LoadD(rows[i] + c + N));
      }
      const VD mb0 = hn::Div(s0, vnb), mb1 = hn::Div(s1, vnb);
      VD q0 = hn::Zero(d), q1 = hn::Zero(d);
      for (int64_t i = 0; i < nrows; ++i) {
        const VD d0 = hn::Sub(LoadD(rows[i] + c), mb0), d1 = hn::Sub(LoadD(rows[i] + c + N), mb1);
        q0 = hn::MulAdd(d0, d0, q0);
        q1 = hn::MulAdd(d1, d1, q1);
      }
      merge(c, mb0, q0);
      merge(c + N, mb1, q1);
    }
    for (; c + N <= C; c += N) {
      VD s0 = hn::Zero(d);
      for (int64_t i = 0; i < nrows; ++i) s0 = hn::Add(s0, LoadD(rows[i] + c));
      const VD mb0 = hn::Div(s0, vnb);
      VD q0 = hn::Zero(d);
      for (int64_t i = 0; i < nrows; ++i) {
        const VD d0 = hn::Sub(LoadD(rows[i] + c), mb0);
        q0 = hn::MulAdd(d0, d0, q0);
      }
      merge(c, mb0, q0);
    }
    for (; c < C; ++c) {
      double sum = 0.0, q = 0.0;
      for (int64_t i = 0; i < nrows; ++i) sum += static_cast<double>(rows[i][c]);
      const double mb = sum / nb;
      for (int64_t i = 0; i < nrows; ++i) {
        const double dv = static_cast<double>(rows[i][c]) - mb;
        q += dv * dv;
      }
      chan_merge(count, nb, mb, q, mean[c], m2[c]);
    }
    count = n;
  }
}

// Σ dy and Σ dy · (x − mean) over rows r0 … r1 − 1, into sum_dy[C], sum_dy_xmu[C].
template <class T>
void backward_sums_cols_partition(const View3& dy, const View3& x, const double* mean, int64_t r0,
                                  int64_t r1, int64_t rows_per_block, double* sum_dy,
                                  double* sum_dy_xmu) {
  const auto N = static_cast<int64_t>(hn::Lanes(DD()));
  const int64_t C = x.C;
  const DD d;
  std::fill_n(sum_dy, C, 0.0);
  std::fill_n(sum_dy_xmu, C, 0.0);
  const T* grows[kMaxRowsPerBlock];
  const T* xrows[kMaxRowsPerBlock];
  for (int64_t b0 = r0; b0 < r1; b0 += rows_per_block) {
    const int64_t nrows = std::min(r1 - b0, rows_per_block);
    for (int64_t i = 0; i < nrows; ++i) {
      grows[i] = cols_row<T>(dy, b0 + i);
      xrows[i] = cols_row<T>(x, b0 + i);
    }
    int64_t c = 0;
    for (; c + N <= C; c += N) {
      const VD m = hn::LoadU(d, mean + c);
      VD s = hn::Zero(d), sx = hn::Zero(d);
      for (int64_t i = 0; i < nrows; ++i) {
        const VD g = LoadD(grows[i] + c);
        s = hn::Add(s, g);
        sx = hn::MulAdd(g, hn::Sub(LoadD(xrows[i] + c), m), sx);
      }
      hn::StoreU(hn::Add(hn::LoadU(d, sum_dy + c), s), d, sum_dy + c);
      hn::StoreU(hn::Add(hn::LoadU(d, sum_dy_xmu + c), sx), d, sum_dy_xmu + c);
    }
    for (; c < C; ++c) {
      double s = 0.0, sx = 0.0;
      for (int64_t i = 0; i < nrows; ++i) {
        const double g = static_cast<double>(grows[i][c]);
        s += g;
        sx += g * (static_cast<double>(xrows[i][c]) - mean[c]);
      }
      sum_dy[c] += s;
      sum_dy_xmu[c] += sx;
    }
  }
}

// Elementwise op over units u0 … u1 − 1 of a cols view, writing the contiguous (N, C, L)
// output: f.vec(c, x, dy) gives the float64 results for channels c … c + lanes − 1, f.scalar
// for one channel. For L == 1 a unit is a row n and the output row is contiguous along C. For
// L > 1 (channels-last) a unit is a block of kChannelBlock channels of one n: values are read
// along C and transposed through a small tile, so that each channel's output is written as a
// sequential stream along L.
template <class T, class F>
void elementwise_cols(T* out, const View3& x, const View3* dy, int64_t u0, int64_t u1, F f) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t C = x.C, L = x.L;
  auto at = [](const View3* v, int64_t n, int64_t c, int64_t l) {
    return v ? static_cast<double>(*row_ptr<T>(*v, n, c, l)) : 0.0;
  };
  if (L == 1) {
    for (int64_t n = u0; n < u1; ++n) {
      const T* p = row_ptr<T>(x, n, 0, 0);
      const T* g = dy ? row_ptr<T>(*dy, n, 0, 0) : nullptr;
      T* o = out + n * C;
      int64_t c = 0;
      for (; c + N <= C; c += N) StoreD(f.vec(c, LoadD(p + c), g ? LoadD(g + c) : hn::Zero(d)), o + c);
      for (; c < C; ++c) o[c] = static_cast<T>(f.scalar(c, at(&x, n, c, 0), at(dy, n, c, 0)));
    }
    return;
  }
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  double lanes[HWY_LANES(double)];
  T tile[kChannelBlock][kTileL];  // [channel - c_begin][l - l0]
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = u / blocks, c_begin = (u % blocks) * kChannelBlock;
    const int64_t width = std::min(C - c_begin, kChannelBlock);
    const int64_t vec_width = width - width % N;  // channels done with vectors
    for (int64_t l0 = 0; l0 < L; l0 += kTileL) {
      const int64_t len = std::min(L - l0, kTileL);
      for (int64_t i = 0; i < len; ++i) {  // each row's channels c_begin … + width, read once
        const T* p = row_ptr<T>(x, n, c_begin, l0 + i);
        const T* g = dy ? row_ptr<T>(*dy, n, c_begin, l0 + i) : nullptr;
        for (int64_t cv = 0; cv < vec_width; cv += N) {
          hn::StoreU(f.vec(c_begin + cv, LoadD(p + cv), g ? LoadD(g + cv) : hn::Zero(d)), d, lanes);
          for (int64_t j = 0; j < N; ++j) tile[cv + j][i] = static_cast<T>(lanes[j]);
        }
        for (int64_t cv = vec_width; cv < width; ++cv) {
          tile[cv][i] = static_cast<T>(f.scalar(c_begin + cv, static_cast<double>(p[cv]),
                                                g ? static_cast<double>(g[cv]) : 0.0));
        }
      }
      for (int64_t j = 0; j < width; ++j) std::copy_n(tile[j], len, out + (n * C + c_begin + j) * L + l0);
    }
  }
}

// y = (x − mean) · scale + shift; vector lanes are consecutive channels.
struct NormalizeOp {
  const double *mean, *scale, *shift;
  HWY_INLINE VD vec(int64_t c, VD x, VD) const {
    const DD d;
    return hn::MulAdd(hn::Sub(x, hn::LoadU(d, mean + c)), hn::LoadU(d, scale + c), hn::LoadU(d, shift + c));
  }
  HWY_INLINE double scalar(int64_t c, double x, double) const { return std::fma(x - mean[c], scale[c], shift[c]); }
};

// dx = a · dy + b · (x − mean) + k; vector lanes are consecutive channels.
struct BackwardInputOp {
  const double *mean, *a, *b, *k;
  HWY_INLINE VD vec(int64_t c, VD x, VD g) const {
    const DD d;
    return hn::MulAdd(hn::LoadU(d, a + c), g,
                      hn::MulAdd(hn::LoadU(d, b + c), hn::Sub(x, hn::LoadU(d, mean + c)), hn::LoadU(d, k + c)));
  }
  HWY_INLINE double scalar(int64_t c, double x, double g) const {
    return std::fma(a[c], g, std::fma(b[c], x - mean[c], k[c]));
  }
};

template <class T>
void normalize_cols(T* y, const View3& x, const double* mean, const double* scale,
                    const double* shift, int64_t u0, int64_t u1) {
  elementwise_cols(y, x, nullptr, u0, u1, NormalizeOp{mean, scale, shift});
}

template <class T>
void backward_input_cols(T* dx, const View3& dy, const View3& x, const double* mean,
                         const double* a, const double* b, const double* k, int64_t u0, int64_t u1) {
  elementwise_cols(dx, x, &dy, u0, u1, BackwardInputOp{mean, a, b, k});
}


// ---- Non-template entry points (one per op and layout), dispatching on dtype -----------------

int64_t TargetId() { return HWY_TARGET; }

void StatsRowsChannel(const View3& x, int64_t c, double* mean, double* m2) {
  if (x.dtype == DType::Float32) stats_rows_channel<float>(x, c, mean, m2);
  else stats_rows_channel<double>(x, c, mean, m2);
}
void StatsRowsPartition(const View3& x, int64_t u0, int64_t u1, double* mean, double* m2) {
  if (x.dtype == DType::Float32) stats_rows_partition<float>(x, u0, u1, mean, m2);
  else stats_rows_partition<double>(x, u0, u1, mean, m2);
}
void BackwardSumsRowsPartition(const View3& dy, const View3& x, const double* mean, int64_t u0,
                               int64_t u1, double* sum_dy, double* sum_dy_xmu) {
  if (x.dtype == DType::Float32) backward_sums_rows_partition<float>(dy, x, mean, u0, u1, sum_dy, sum_dy_xmu);
  else backward_sums_rows_partition<double>(dy, x, mean, u0, u1, sum_dy, sum_dy_xmu);
}
void StatsColsPartition(const View3& x, int64_t r0, int64_t r1, int64_t rows_per_block,
                        double* mean, double* m2) {
  if (x.dtype == DType::Float32) stats_cols_partition<float>(x, r0, r1, rows_per_block, mean, m2);
  else stats_cols_partition<double>(x, r0, r1, rows_per_block, mean, m2);
}
void NormalizeRows(void* y, const View3& x, const double* mean, const double* scale,
                   const double* shift, int64_t i0, int64_t i1) {
  if (x.dtype == DType::Float32) normalize_rows(static_cast<float*>(y), x, mean, scale, shift, i0, i1);
  else normalize_rows(static_cast<double*>(y), x, mean, scale, shift, i0, i1);
}
void NormalizeCols(void* y, const View3& x, const double* mean, const double* scale,
                   const double* shift, int64_t u0, int64_t u1) {
  if (x.dtype == DType::Float32) normalize_cols(static_cast<float*>(y), x, mean, scale, shift, u0, u1);
  else normalize_cols(static_cast<double*>(y), x, mean, scale, shift, u0, u1);
}
void BackwardSumsRowsChannel(const View3& dy, const View3& x, const double* mean, int64_t c,
                             double* sum_dy, double* sum_dy_xmu) {
  if (x.dtype == DType::Float32) backward_sums_rows_channel<float>(dy, x, mean, c, sum_dy, sum_dy_xmu);
  else backward_sums_rows_channel<double>(dy, x, mean, c, sum_dy, sum_dy_xmu);
}
void BackwardSumsColsPartition(const View3& dy, const View3& x, const double* mean, int64_t r0,
                               int64_t r1, int64_t rows_per_block, double* sum_dy, double* sum_dy_xmu) {
  if (x.dtype == DType::Float32) backward_sums_cols_partition<float>(dy, x, mean, r0, r1, rows_per_block, sum_dy, sum_dy_xmu);
  else backward_sums_cols_partition<double>(dy, x, mean, r0, r1, rows_per_block, sum_dy, sum_dy_xmu);
}
void BackwardInputRows(void* dx, const View3& dy, const View3& x, const double* mean,
                       const double* a, const double* b, const double* k, int64_t i0, int64_t i1) {
  if (x.dtype == DType::Float32) backward_input_rows(static_cast<float*>(dx), dy, x, mean, a, b, k, i0, i1);
  else backward_input_rows(static_cast<double*>(dx), dy, x, mean, a, b, k, i0, i1);
}
void BackwardInputCols(void* dx, const View3& dy, const View3& x, const double* mean,
                       const double* a, const double* b, const double* k, int64_t u0, int64_t u1) {
  if (x.dtype == DType::Float32) backward_input_cols(static_cast<float*>(dx), dy, x, mean, a, b, k, u0, u1);
  else backward_input_cols(static_cast<double*>(dx), dy, x, mean, a, b, k, u0, u1);
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <omp.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "bn1d/error.hpp"
#include "kernels/simd.hpp"

namespace bn1d::kernels::simd {

HWY_EXPORT(TargetId);
HWY_EXPORT(StatsRowsChannel);
HWY_EXPORT(StatsRowsPartition);
HWY_EXPORT(BackwardSumsRowsPartition);
HWY_EXPORT(StatsColsPartition);
HWY_EXPORT(NormalizeRows);
HWY_EXPORT(NormalizeCols);
HWY_EXPORT(BackwardSumsRowsChannel);
HWY_EXPORT(BackwardSumsColsPartition);
HWY_EXPORT(BackwardInputRows);
HWY_EXPORT(BackwardInputCols);

namespace {

// At least this many elements per thread: below it, forking costs more than it saves.
constexpr int64_t kGrain = 1 << 16;
// Cols-layout reductions are split into at most this many row partitions, reduced separately
// and merged in order: the split depends on the shape only, never on the thread count.
constexpr int64_t kPartitions = 16;
constexpr int64_t kBlock = 4096;
constexpr int64_t kChannelBlock = 16;

int threads_for(int64_t elements) {
  const int64_t t = std::min<int64_t>(elements / kGrain, omp_get_max_threads());
  return static_cast<int>(std::max<int64_t>(t, 1));
}

int64_t rows_per_block(int64_t C) { return std::clamp<int64_t>(kBlock / C, 4, 256); }

// Names of all compiled targets this CPU supports, read once before any forcing.
const std::vector<int64_t>& all_targets() {
  static const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  return targets;
}

void apply_environment_once() {
  static const bool applied = [] {
    all_targets();
    if (const char* name = std::getenv("BN1D_SIMD_TARGET"); name != nullptr && *name != '\0') {
      force_target(name);
    }
    return true;
  }();
  (void)applied;
}

// Splits [0, units) into `parts` contiguous ranges and runs body(begin, end) on each, in parallel.
template <class F>
void parallel_ranges(int64_t units, int threads, F body) {
  const int64_t parts = std::min<int64_t>(threads, units);
#pragma omp parallel for num_threads(threads) schedule(static) if (parts > 1)
  for (int64_t p = 0; p < parts; ++p) body(p * units / parts, (p + 1) * units / parts);
}

// Reductions are split into at most kPartitions partitions of consecutive work units; each is
// reduced on its own and the partitions are merged in order. The split depends on the shape
// only. values(p) is the number of values per channel in partition p.

// Cols layout: units are rows r = n·L + l, grouped into blocks of `block` rows.
struct ColsPartitions {
  int64_t rows, block, blocks, count;
  explicit ColsPartitions(const View3& x)
      : rows(x.N * x.L), block(rows_per_block(x.C)), blocks((rows + block - 1) / block),
        count(std::min(blocks, kPartitions)) {}
  int64_t first(int64_t p) const { return std::min(rows, p * blocks / count * block); }
  int64_t last(int64_t p) const { return std::min(rows, (p + 1) * blocks / count * block); }
  double values(int64_t p) const { return static_cast<double>(last(p) - first(p)); }
};

// Rows layout with long rows: units u = n · pieces + piece, a piece being kBlock values of l.
struct RowsPartitions {
  int64_t L, pieces, units, count;
  explicit RowsPartitions(const View3& x)
      : L(x.L), pieces((x.L + kBlock - 1) / kBlock), units(x.N * pieces),
        count(std::min(units, kPartitions)) {}
  int64_t first(int64_t p) const { return p * units / count; }
  int64_t last(int64_t p) const { return (p + 1) * units / count; }
  double values(int64_t p) const {
    int64_t v = 0;
    for (int64_t u = first(p); u < last(p); ++u) v += std::min(kBlock, L - (u % pieces) * kBlock);
    return static_cast<double>(v);
  }
};

// Rows shorter than this are reduced channel by channel (StatsRowsChannel), grouping many rows
// of a channel per block; longer rows are walked in memory order by partitions.
constexpr int64_t kMinPartitionRow = 256;

std::vector<double>& partition_scratch(std::size_t n) {
  thread_local std::vector<double> scratch;
  if (scratch.size() < n) scratch.resize(n);
  return scratch;
}

int64_t cols_units(const View3& x) {
  return x.L == 1 ? x.N : x.N * ((x.C + kChannelBlock - 1) / kChannelBlock);
}

}  // namespace

bool rows_layout(const View3& v) { return v.sL == 1 && v.L >= 8; }

bool cols_layout(const View3& v) { return v.sC == 1; }

// Chan merge, in order, of per-partition statistics (part_mean/part_m2: count × C).
template <class Parts>
void merge_partitions(double* mean, double* m2, const Parts& parts, int64_t C,
                      const double* part_mean, const double* part_m2) {
  for (int64_t c = 0; c < C; ++c) {
    double count = 0.0, mu = 0.0, q = 0.0;
    for (int64_t p = 0; p < parts.count; ++p) {
      const double nb = parts.values(p);
      if (nb == 0.0) continue;
      const double n = count + nb, delta = part_mean[p * C + c] - mu;
      mu += delta * (nb / n);
      q += part_m2[p * C + c] + delta * delta * (count * nb / n);
      count = n;
    }
    mean[c] = mu;
    m2[c] = q;
  }
}

// Per-partition sums (part_a/part_b: count × C) added up in order.
void sum_partitions(double* a, double* b, int64_t parts, int64_t C, const double* part_a,
                    const double* part_b) {
  for (int64_t c = 0; c < C; ++c) {
    double sa = 0.0, sb = 0.0;
    for (int64_t p = 0; p < parts; ++p) {
      sa += part_a[p * C + c];
      sb += part_b[p * C + c];
    }
    a[c] = sa;
    b[c] = sb;
  }
}

void channel_stats(Layout layout, double* mean, double* m2, const View3& x) {
  apply_environment_once();
  const int threads = threads_for(x.N * x.C * x.L);
  const int64_t C = x.C;
  if (layout == Layout::Rows && x.L < kMinPartitionRow) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t c = 0; c < C; ++c) HWY_DYNAMIC_DISPATCH(StatsRowsChannel)(x, c, mean + c, m2 + c);
    return;
  }
  auto reduce = [&](const auto& parts, auto kernel) {
    std::vector<double>& scratch = partition_scratch(static_cast<std::size_t>(2 * parts.count * C));
    double* part_mean = scratch.data();
    double* part_m2 = part_mean + parts.count * C;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t p = 0; p < parts.count; ++p) kernel(parts, p, part_mean + p * C, part_m2 + p * C);
    merge_partitions(mean, m2, parts, C, part_mean, part_m2);
  };
  if (layout == Layout::Rows) {
    reduce(RowsPartitions(x), [&](const RowsPartitions& parts, int64_t p, double* pm, double* pq) {
      HWY_DYNAMIC_DISPATCH(StatsRowsPartition)(x, parts.first(p), parts.last(p), pm, pq);
    });
  } else {
    reduce(ColsPartitions(x), [&](const ColsPartitions& parts, int64_t p, double* pm, double* pq) {
      HWY_DYNAMIC_DISPATCH(StatsColsPartition)(x, parts.first(p), parts.last(p), parts.block, pm, pq);
    });
  }
}

void normalize(Layout layout, void* y, const View3& x, const double* mean, const double* scale,
               const double* shift) {
  apply_environment_once();
  const int threads = threads_for(x.N * x.C * x.L);
  if (layout == Layout::Rows) {
    parallel_ranges(x.N * x.C, threads, [&](int64_t i0, int64_t i1) {
      HWY_DYNAMIC_DISPATCH(NormalizeRows)(y, x, mean, scale, shift, i0, i1);
    });
  } else {
    parallel_ranges(cols_units(x), threads, [&](int64_t u0, int64_t u1) {
      HWY_DYNAMIC_DISPATCH(NormalizeCols)(y, x, mean, scale, shift, u0, u1);
    });
  }
}

void backward_sums(Layout layout, double* sum_dy, double* sum_dy_xmu, const View3& dy,
                   const View3& x, const double* mean) {
  apply_environment_once();
  const int threads = threads_for(2 * x.N * x.C * x.L);
  const int64_t C = x.C;
  if (layout == Layout::Rows && x.L < kMinPartitionRow) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t c = 0; c < C; ++c) {
      HWY_DYNAMIC_DISPATCH(BackwardSumsRowsChannel)(dy, x, mean, c, sum_dy + c, sum_dy_xmu + c);
    }
    return;
  }
  auto reduce = [&](const auto& parts, auto kernel) {
    std::vector<double>& scratch = partition_scratch(static_cast<std::size_t>(2 * parts.count * C));
    double* part_s = scratch.data();
    double* part_sx = part_s + parts.count * C;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t p = 0; p < parts.count; ++p) kernel(parts, p, part_s + p * C, part_sx + p * C);
    sum_partitions(sum_dy, sum_dy_xmu, parts.count, C, part_s, part_sx);
  };
  if (layout == Layout::Rows) {
    reduce(RowsPartitions(x), [&](const RowsPartitions& parts, int64_t p, double* ps, double* psx) {
      HWY_DYNAMIC_DISPATCH(BackwardSumsRowsPartition)(dy, x, mean, parts.first(p), parts.last(p), ps, psx);
    });
  } else {
    reduce(ColsPartitions(x), [&](const ColsPartitions& parts, int64_t p, double* ps, double* psx) {
      HWY_DYNAMIC_DISPATCH(BackwardSumsColsPartition)(dy, x, mean, parts.first(p), parts.last(p),
                                                      parts.block, ps, psx);
    });
  }
}

void backward_input(Layout layout, void* dx, const View3& dy, const View3& x, const double* mean,
                    const double* a, const double* b, const double* k) {
  apply_environment_once();
  const int threads = threads_for(2 * x.N * x.C * x.L);
  if (layout == Layout::Rows) {
    parallel_ranges(x.N * x.C, threads, [&](int64_t i0, int64_t i1) {
      HWY_DYNAMIC_DISPATCH(BackwardInputRows)(dx, dy, x, mean, a, b, k, i0, i1);
    });
  } else {
    parallel_ranges(cols_units(x), threads, [&](int64_t u0, int64_t u1) {
      HWY_DYNAMIC_DISPATCH(BackwardInputCols)(dx, dy, x, mean, a, b, k, u0, u1);
    });
  }
}

std::vector<std::string> targets() {
  std::vector<std::string> names;
  for (int64_t t : all_targets()) names.emplace_back(hwy::TargetName(t));
  return names;
}

std::string active_target() {
  apply_environment_once();
  return hwy::TargetName(HWY_DYNAMIC_DISPATCH(TargetId)());
}

void force_target(const std::string& name) {
  if (name.empty()) {
    hwy::SetSupportedTargetsForTest(0);
    return;
  }
  std::string available;
  for (int64_t t : all_targets()) {
    if (name == hwy::TargetName(t)) {
      hwy::SetSupportedTargetsForTest(t);
      return;
    }
    available += (available.empty() ? "" : ", ") + std::string(hwy::TargetName(t));
  }
  throw Error("SIMD target \"" + name + "\" (BN1D_SIMD_TARGET) is not compiled in or not supported by this CPU; available: " + available);
}

}  // namespace bn1d::kernels::simd
#endif  // HWY_ONCE
