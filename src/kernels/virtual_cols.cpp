// SPDX-License-Identifier: MIT
// Short rows and narrow channels as a wide cols view (see virtual_cols.hpp): the plans, the
// virtual views, and the folds of virtual-channel results into channels.
#include "kernels/virtual_cols.hpp"

#include <algorithm>
#include <cstddef>
#include <numeric>

#include "kernels/simd.hpp"
#include "kernels/workspace.hpp"

namespace bn1d::kernels::virtual_cols {
namespace {

using Kind = Plan::Kind;

// Widths of Cycles views are multiples of this many channels: the float64 lanes of the widest
// target times the cols statistics' smaller chunk of vectors (AVX-512: 8 lanes · 4 vectors), so
// that every virtual channel is reduced in full vector chunks.
constexpr int64_t kVectorChannels = 32;
// Cycles apply to channel counts that are not a multiple of kVectorChannels, in views at least
// kMinCyclesWidth wide (narrower rows cost more per value than they carry) and at most
// kMaxCyclesWidth (their scratch and parameters grow with it): docs/tuning.md#cycles-widths.
constexpr int64_t kMinCyclesWidth = 256;
constexpr int64_t kMaxCyclesWidth[] = {2560, 4096};  // by Op: Reduction, Elementwise
// Runs views are at most this wide (their per-virtual-channel scratch and parameters grow with
// it), and rows of at most kMaxRunsL values are walked as Runs: the rows kernels catch up with the
// cols kernels at different lengths for the reductions and the elementwise passes
// (docs/tuning.md#runs-lengths).
constexpr int64_t kMaxRunsWidth = 4096;
constexpr int64_t kMaxRunsL[] = {128, 32};  // by Op: Reduction, Elementwise
// Fewer virtual rows than this are not worth the folds and the expanded coefficients.
constexpr int64_t kMinRows = 4;

// The C channels of each row (n, l) are contiguous and rows follow each other in memory.
bool dense_cols(const View3& v) {
  return v.sC == 1 && (v.L == 1 ? v.sN == v.C : v.sL == v.C && v.sN == v.L * v.C);
}

// The virtual channel of channel c's i-th virtual channel.
int64_t virtual_channel(const Plan& p, int64_t c, int64_t i) {
  return p.kind == Kind::Runs ? c * p.L + i : i * p.C + c;
}

// The rows of the virtual view: Runs keep the input's n (and its stride), Cycles take g rows at
// a time from the start of the data.
View3 wide_view(const Plan& p, const View3& v) {
  View3 w = v;
  w.N = p.rows;
  w.C = p.width();
  w.L = 1;
  if (p.kind == Kind::Cycles) w.sN = p.width();
  w.sC = 1;
  w.sL = 1;
  return w;
}
Out3 wide_out(const Plan& p, const Out3& o) {
  Out3 w = o;
  if (p.kind == Kind::Cycles) w.sN = p.width();
  w.sC = 1;
  w.sL = 1;
  return w;
}

// Cycles: the p.rest rows after the virtual view's, as an ordinary (rest, C) cols view.
std::ptrdiff_t rest_offset(const Plan& p, DType dtype) {
  return static_cast<std::ptrdiff_t>(p.rows * p.width() *
                                     static_cast<int64_t>(element_size(dtype)));
}
View3 rest_view(const Plan& p, const View3& v) {
  View3 w = v;
  w.data = static_cast<const char*>(v.data) + rest_offset(p, v.dtype);
  w.N = p.rest;
  w.L = 1;
  w.sN = p.C;
  w.sC = 1;
  w.sL = 1;
  return w;
}
Out3 rest_out(const Plan& p, const Out3& o, DType dtype) {
  Out3 w = o;
  w.data = static_cast<char*>(o.data) + rest_offset(p, dtype);
  w.sN = p.C;
  w.sC = 1;
  w.sL = 1;
  return w;
}

VirtualColsScratch& scratch() { return thread_workspace().virtual_cols; }

// out[virtual_channel(c, i)] = v[c] for every i: per-channel coefficients over the view, in
// `storage`.
template <class T>
const T* expanded(const Plan& p, const T* v, AlignedBuffer<T>& storage) {
  T* out = storage.get(p.width());
  if (p.kind == Kind::Runs) {
    for (int64_t c = 0; c < p.C; ++c) std::fill_n(out + c * p.L, p.L, v[c]);
  } else {
    for (int64_t i = 0; i < p.group; ++i) std::copy_n(v, p.C, out + i * p.C);
  }
  return out;
}

// Channel statistics from the virtual channels' (mean_v, m2_v), n values each: over the
// G = p.group virtual channels of channel c, in order, mean = m₀ + Σ (mean_v − m₀) / G with m₀
// the first one's mean (a constant channel keeps exactly its value) and
// M2 = Σ m2_v + n · Σ (mean_v − mean)² (the exact decomposition of M2 into the groups' M2 and
// the spread of their means; docs/math.md).
void fold_stats(const Plan& p, double* mean, double* m2, const double* mean_v, const double* m2_v,
                double n) {
  const auto G = static_cast<double>(p.group);
  for (int64_t c = 0; c < p.C; ++c) {
    const double m0 = mean_v[virtual_channel(p, c, 0)];
    double s = 0.0;
    for (int64_t i = 1; i < p.group; ++i) s += mean_v[virtual_channel(p, c, i)] - m0;
    const double mu = m0 + s / G;
    double q = 0.0, spread = 0.0;
    for (int64_t i = 0; i < p.group; ++i) {
      const int64_t j = virtual_channel(p, c, i);
      const double d = mean_v[j] - mu;
      q += m2_v[j];
      spread += d * d;
    }
    mean[c] = mu;
    m2[c] = q + n * spread;
  }
}

// sum[c] = Σ sum_v over channel c's virtual channels, in order (and likewise sum2).
void fold_sums(const Plan& p, double* sum, double* sum2, const double* sum_v,
               const double* sum2_v) {
  for (int64_t c = 0; c < p.C; ++c) {
    double s = 0.0, s2 = 0.0;
    for (int64_t i = 0; i < p.group; ++i) {
      const int64_t j = virtual_channel(p, c, i);
      s += sum_v[j];
      s2 += sum2_v[j];
    }
    sum[c] = s;
    sum2[c] = s2;
  }
}

}  // namespace

Plan plan(const View3& x, Op op) {
  Plan p;
  p.C = x.C;
  p.L = x.L;
  if (x.N <= 0 || x.C <= 0 || x.L <= 0) return p;
  const int by_op = op == Op::Reduction ? 0 : 1;
  const int64_t max_l = kMaxRunsL[by_op];
  if (x.sL == 1 && x.sC == x.L && x.L > 1 && x.L <= max_l && x.C <= kMaxRunsWidth / x.L &&
      x.N >= kMinRows) {
    p.kind = Kind::Runs;
    p.group = x.L;
    p.rows = x.N;
    return p;
  }
  // (C no wider than the view bounds its least common multiple with kVectorChannels, which
  // then cannot overflow.)
  if (dense_cols(x) && x.C % kVectorChannels != 0 && x.C <= kMaxCyclesWidth[by_op]) {
    int64_t width = std::lcm(x.C, kVectorChannels);
    while (width < kMinCyclesWidth) width *= 2;
    const int64_t g = width / x.C, rows = x.N * x.L;
    if (width <= kMaxCyclesWidth[by_op] && rows / g >= kMinRows) {
      p.kind = Kind::Cycles;
      p.group = g;
      p.rows = rows / g;
      p.rest = rows % g;
    }
  }
  return p;
}

bool fits(const Plan& p, const View3& v) {
  if (p.kind == Kind::Runs) return v.sL == 1 && v.sC == p.L;
  return p.kind == Kind::Cycles && dense_cols(v);
}

bool fits(const Plan& p, const Out3& o) {
  if (p.kind == Kind::Runs) return o.sL == 1 && o.sC == p.L;
  return p.kind == Kind::Cycles && o.sC == 1 &&
         (p.L == 1 ? o.sN == p.C : o.sL == p.C && o.sN == p.L * p.C);
}

void channel_stats(const Plan& p, double* mean, double* m2, const View3& x) {
  VirtualColsScratch& s = scratch();
  double* mean_v = s.virtual_first.get(p.width());
  double* m2_v = s.virtual_second.get(p.width());
  simd::channel_stats(simd::Layout::UnitStrideC, mean_v, m2_v, wide_view(p, x));
  fold_stats(p, mean, m2, mean_v, m2_v, static_cast<double>(p.rows));
  if (p.kind != Kind::Cycles || p.rest == 0) return;
  // The rows left over, merged last (Chan's formula, as partitions are merged).
  double* rest_mean = s.rest_first.get(p.C);
  double* rest_m2 = s.rest_second.get(p.C);
  simd::channel_stats(simd::Layout::UnitStrideC, rest_mean, rest_m2, rest_view(p, x));
  const auto na = static_cast<double>(p.rows * p.group), nb = static_cast<double>(p.rest);
  const double n = na + nb;
  simd::merge_slot(mean, m2, rest_mean, rest_m2, nb / n, na * nb / n, false, p.C);
}

void normalize(const Plan& p, const Out3& y, const View3& x, const double* mean,
               const double* scale, const double* shift, const Act& act) {
  VirtualColsScratch& s = scratch();
  simd::normalize(simd::Layout::UnitStrideC, wide_out(p, y), wide_view(p, x),
                  expanded(p, mean, s.expanded_mean),
                  expanded(p, scale, s.expanded_coefficients[0]),
                  expanded(p, shift, s.expanded_coefficients[1]), act);
  if (p.kind == Kind::Cycles && p.rest > 0)
    simd::normalize(simd::Layout::UnitStrideC, rest_out(p, y, x.dtype), rest_view(p, x), mean,
                    scale, shift, act);
}

namespace {
// The activation of a call on the virtual channels: its z parameters expanded (into buffers
// first and first + 1 of the scratch) like the others, and its gate tests where it has them.
Act expanded_act(const Plan& p, const Act& act, std::size_t first) {
  if (!act.enabled()) return act;
  VirtualColsScratch& s = scratch();
  Act wide{act.kind, act.slope, expanded(p, act.scale, s.expanded_coefficients[first]),
           expanded(p, act.shift, s.expanded_coefficients[first + 1])};
  if (act.gate_keep != nullptr) {
    wide.gate_keep = expanded(p, act.gate_keep, s.expanded_gate_masks[0]);
    wide.gate_flip = expanded(p, act.gate_flip, s.expanded_gate_masks[1]);
    wide.gate_max = expanded(p, act.gate_max, s.expanded_gate_max);
  }
  return wide;
}
}  // namespace

void backward_sums(const Plan& p, double* sum_dy, double* sum_dy_xmu, const View3& dy,
                   const View3& x, const double* mean, const Act& act) {
  VirtualColsScratch& s = scratch();
  double* sum_v = s.virtual_first.get(p.width());
  double* sum2_v = s.virtual_second.get(p.width());
  // The gate tests of the real channels, found once and expanded (else the call finds its own).
  Act gated = act;
  (void)simd::with_gate_tests(gated, x.dtype, p.C, mean);
  simd::backward_sums(simd::Layout::UnitStrideC, sum_v, sum2_v, wide_view(p, dy), wide_view(p, x),
                      expanded(p, mean, s.expanded_mean), expanded_act(p, gated, 0));
  fold_sums(p, sum_dy, sum_dy_xmu, sum_v, sum2_v);
  if (p.kind != Kind::Cycles || p.rest == 0) return;
  double* rest_s = s.rest_first.get(p.C);
  double* rest_sx = s.rest_second.get(p.C);
  simd::backward_sums(simd::Layout::UnitStrideC, rest_s, rest_sx, rest_view(p, dy), rest_view(p, x),
                      mean, gated);
  simd::add_slot(sum_dy, sum_dy_xmu, rest_s, rest_sx, false, p.C);
}

void backward_input(const Plan& p, const Out3& dx, const View3& dy, const View3& x,
                    const double* mean, const double* a, const double* b, const double* k,
                    const Act& act) {
  VirtualColsScratch& s = scratch();
  simd::backward_input(simd::Layout::UnitStrideC, wide_out(p, dx), wide_view(p, dy),
                       wide_view(p, x), expanded(p, mean, s.expanded_mean),
                       expanded(p, a, s.expanded_coefficients[0]),
                       expanded(p, b, s.expanded_coefficients[1]),
                       expanded(p, k, s.expanded_coefficients[2]), expanded_act(p, act, 3));
  if (p.kind == Kind::Cycles && p.rest > 0)
    simd::backward_input(simd::Layout::UnitStrideC, rest_out(p, dx, x.dtype), rest_view(p, dy),
                         rest_view(p, x), mean, a, b, k, act);
}

}  // namespace bn1d::kernels::virtual_cols
