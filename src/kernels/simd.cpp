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
#include <cstring>
#include <type_traits>
// clang-format on
#include "hwy/highway.h"
#include "kernels/blocking.hpp"
#include "kernels/reference.hpp"
#include "kernels/simd-inl.h"
#include "kernels/simd_channels-inl.h"
#include "kernels/simd_cols-inl.h"
#include "kernels/simd_rows-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
// ---- Non-template entry points (one per op and layout), dispatching on dtype -----------------

int64_t TargetId() { return HWY_TARGET; }

void StatsRowsChannel(const View3& x, int64_t c, double* mean, double* m2) {
  if (x.dtype == DType::Float32)
    stats_rows_channel<float>(x, c, mean, m2);
  else
    stats_rows_channel<double>(x, c, mean, m2);
}
void StatsRowsPartition(const View3& x, int64_t u0, int64_t u1, double* mean, double* m2) {
  if (x.dtype == DType::Float32)
    stats_rows_partition<float>(x, u0, u1, mean, m2);
  else
    stats_rows_partition<double>(x, u0, u1, mean, m2);
}
void BackwardSumsRowsPartition(const View3& dy, const View3& x, const double* mean, int64_t u0,
                               int64_t u1, double* sum_dy, double* sum_dy_xmu) {
  if (x.dtype == DType::Float32)
    backward_sums_rows_partition<float>(dy, x, mean, u0, u1, sum_dy, sum_dy_xmu);
  else
    backward_sums_rows_partition<double>(dy, x, mean, u0, u1, sum_dy, sum_dy_xmu);
}
void StatsColsPartition(const View3& x, int64_t r0, int64_t r1, int64_t block, int64_t c0,
                        int64_t c1, bool prefetch, double* mean, double* m2) {
  if (x.dtype == DType::Float32)
    stats_cols_partition<float>(x, r0, r1, block, c0, c1, prefetch, mean, m2);
  else
    stats_cols_partition<double>(x, r0, r1, block, c0, c1, prefetch, mean, m2);
}
// Elementwise entry points: P holds the per-channel parameters in the input's dtype (see
// elementwise_params in the dispatcher).
void NormalizeRows(const Out3& y, const View3& x, const void* P, int64_t i0, int64_t i1,
                   bool stream) {
  if (x.dtype == DType::Float32)
    normalize_rows<float>(y, x, static_cast<const float*>(P), i0, i1, stream);
  else
    normalize_rows<double>(y, x, static_cast<const double*>(P), i0, i1, stream);
}
void NormalizeCols(const Out3& y, const View3& x, const void* P, int64_t u0, int64_t u1,
                   bool stream) {
  if (x.dtype == DType::Float32)
    normalize_cols<float>(y, x, static_cast<const float*>(P), u0, u1, stream);
  else
    normalize_cols<double>(y, x, static_cast<const double*>(P), u0, u1, stream);
}
void BackwardSumsRowsChannel(const View3& dy, const View3& x, const double* mean, int64_t c,
                             double* sum_dy, double* sum_dy_xmu) {
  if (x.dtype == DType::Float32)
    backward_sums_rows_channel<float>(dy, x, mean, c, sum_dy, sum_dy_xmu);
  else
    backward_sums_rows_channel<double>(dy, x, mean, c, sum_dy, sum_dy_xmu);
}
void BackwardSumsColsPartition(const View3& dy, const View3& x, const double* mean, int64_t r0,
                               int64_t r1, int64_t c0, int64_t c1, int step, int64_t tile,
                               double* sum_dy, double* sum_dy_xmu) {
  if (x.dtype == DType::Float32)
    backward_sums_cols_partition<float>(dy, x, mean, r0, r1, c0, c1, step, tile, sum_dy,
                                        sum_dy_xmu);
  else
    backward_sums_cols_partition<double>(dy, x, mean, r0, r1, c0, c1, step, tile, sum_dy,
                                         sum_dy_xmu);
}
void BackwardInputRows(const Out3& dx, const View3& dy, const View3& x, const void* P, int64_t i0,
                       int64_t i1, bool stream) {
  if (x.dtype == DType::Float32)
    backward_input_rows<float>(dx, dy, x, static_cast<const float*>(P), i0, i1, stream);
  else
    backward_input_rows<double>(dx, dy, x, static_cast<const double*>(P), i0, i1, stream);
}
void BackwardInputCols(const Out3& dx, const View3& dy, const View3& x, const void* P, int64_t u0,
                       int64_t u1, bool stream) {
  if (x.dtype == DType::Float32)
    backward_input_cols<float>(dx, dy, x, static_cast<const float*>(P), u0, u1, stream);
  else
    backward_input_cols<double>(dx, dy, x, static_cast<const double*>(P), u0, u1, stream);
}

// ---- Per-channel helpers of the dispatcher ----------------------------------------------------

// Stores v at p unless p already holds the same bits: a line that another thread has read keeps
// its shared copy when nothing in it changes.
template <class T>
HWY_INLINE void store_if_changed(hn::Vec<DT<T>> v, T* p) {
  const DT<T> dt;
  const hn::RebindToUnsigned<DT<T>> du;
  if (!hn::AllTrue(du, hn::Eq(hn::BitCast(du, v), hn::BitCast(du, hn::LoadU(dt, p)))))
    hn::StoreU(v, dt, p);
}
template <class T>
HWY_INLINE void store_if_changed(T v, T* p) {
  if (std::memcmp(&v, p, sizeof(T)) != 0) *p = v;
}

// The per-channel parameters in T, C values each (see elementwise_params_t), writing only the
// values that changed since the last call: P = [mean_hi | mean_lo | columns[0] | …], or with
// fold ≥ 0 P = [mean_hi | columns[0] | … | folded last column], the last column plus
// −mean_lo · columns[fold] in float64 before its one rounding to T (not where mean_lo is 0, e.g.
// always for float64: −0 · s + (−0) would turn a −0 into +0, and the kernels keep the
// reference's signed zeros). Returns whether all are finite.
template <class T>
bool update_params(T* P, int64_t C, const double* mean, const double* const* columns, int64_t count,
                   int64_t fold) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t last = count - 1, first_column = fold < 0 ? 2 : 1;
  // v − v is 0 for a finite v and NaN otherwise: the sum of them is 0 when all are finite.
  auto sum = hn::Zero(DT<T>());
  const auto store = [&](auto v, T* p) {
    sum = hn::Add(sum, hn::Sub(v, v));
    store_if_changed<T>(v, p);
  };
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    const VD m = hn::LoadU(d, mean + c);
    const auto hi = ToT<T>(m);
    const VD lo = hn::Sub(m, ToD(hi));  // exact
    store(hi, P + c);
    if (fold < 0) store(ToT<T>(lo), P + C + c);
    for (int64_t k = 0; k < count; ++k) {
      VD v = hn::LoadU(d, columns[k] + c);
      if (fold >= 0 && k == last) {
        const VD folded = hn::NegMulAdd(lo, hn::LoadU(d, columns[fold] + c), v);
        v = hn::IfThenElse(hn::Eq(lo, hn::Zero(d)), v, folded);
      }
      store(ToT<T>(v), P + (first_column + k) * C + c);
    }
  }
  bool finite = hn::AllTrue(DT<T>(), hn::Eq(sum, hn::Zero(DT<T>())));
  const auto store_scalar = [&](T v, T* p) {
    finite &= std::isfinite(v);
    store_if_changed<T>(v, p);
  };
  for (; c < C; ++c) {
    const auto hi = static_cast<T>(mean[c]);
    const double lo = mean[c] - static_cast<double>(hi);
    store_scalar(hi, P + c);
    if (fold < 0) store_scalar(static_cast<T>(lo), P + C + c);
    for (int64_t k = 0; k < count; ++k) {
      double v = columns[k][c];
      if (fold >= 0 && k == last && lo != 0.0) v = std::fma(-lo, columns[fold][c], v);
      store_scalar(static_cast<T>(v), P + (first_column + k) * C + c);
    }
  }
  return finite;
}
bool UpdateParams(void* P, DType dtype, int64_t C, const double* mean, const double* const* columns,
                  int64_t count, int64_t fold) {
  if (dtype == DType::Float32)
    return update_params(static_cast<float*>(P), C, mean, columns, count, fold);
  return update_params(static_cast<double*>(P), C, mean, columns, count, fold);
}

// out[c] = 1 / sqrt(v[c] / divisor + eps), 0 where that sum is 0 (see simd.hpp); out may be v.
void InvStd(double* out, const double* v, double divisor, double eps, int64_t C) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const VD div = hn::Set(d, divisor), e = hn::Set(d, eps), one = hn::Set(d, 1.0);
  const VD zero = hn::Zero(d);
  int64_t c = 0;
  for (; c + N <= C; c += N) {
    const VD q = hn::LoadU(d, v + c);  // ÷ 1 (running variances) changes no bit: skipped
    const VD var = hn::Add(divisor == 1.0 ? q : hn::Div(q, div), e);
    hn::StoreU(hn::IfThenZeroElse(hn::Eq(var, zero), hn::Div(one, hn::Sqrt(var))), d, out + c);
  }
  reference::invstd(out + c, v + c, divisor, eps, C - c);  // the tail, as the oracle does it
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include "bn1d/error.hpp"
#include "kernels/partitions.hpp"
#include "kernels/reference.hpp"
#include "kernels/simd.hpp"
#include "kernels/workspace.hpp"

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
HWY_EXPORT(InvStd);
HWY_EXPORT(UpdateParams);
HWY_EXPORT(ToF64);
HWY_EXPORT(FromF64);
HWY_EXPORT(Multiply);
HWY_EXPORT(RunningUpdate);
HWY_EXPORT(BackwardCoefficients);
HWY_EXPORT(MergeSlot);
HWY_EXPORT(AddSlot);
HWY_EXPORT(FirstNegativeSum);

namespace {

// Outputs are written with non-temporal stores when the call's inputs total this much: inputs
// and output would not stay in cache anyway, and streaming saves reading every line before
// writing it. Measured on AMD Zen 4: backward_input of (8192, 256) float32 (x and dy, 8 MiB
// each) 1.6× faster streamed at one thread and 1.3× at two, normalize of the same shape faster
// with its output in cache: 16 MiB. Measured on an Intel Xeon (AVX-512, 2 MiB L2 per core, in a
// VM): normalize of (8192, 256) float32 ran 2× faster streamed at one thread and at two, and
// was still 6–17% faster when its output was read right after (as the next layer reads it);
// (2048, 1024) 1.2–1.3× faster alone and 8% slower followed by that read; 4 MiB outputs lost
// more than they gained when read after: 8 MiB on Intel CPUs. On AMD Zen 5 (in-process A/B),
// normalize of (8192, 256) float32 alone ran in 0.70–0.90x the time streamed, but followed by a
// read of its output 1.24x slower streamed (2 and 4 MiB: 1.18–1.39x slower), while 16 MiB
// outputs were faster streamed either way (1.08–1.24x slower followed by the read without it):
// the threshold stays at 16 MiB there.
int64_t stream_min_bytes() {
#if defined(__x86_64__) || defined(__i386__)
  static const int64_t bytes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") ? int64_t{8} << 20 : int64_t{16} << 20;
  }();
  return bytes;
#else
  return int64_t{16} << 20;
#endif
}

// Bytes of the values of a view.
int64_t bytes_of(const View3& x) {
  return x.N * x.C * x.L * static_cast<int64_t>(element_size(x.dtype));
}

// Whether an op reading `inputs` tensors shaped like x streams its output.
bool streams(const View3& x, int64_t inputs = 1) {
  return inputs * bytes_of(x) >= stream_min_bytes();
}

int threads_for(int64_t elements) {
  const int64_t t = std::min<int64_t>(elements / kGrain, omp_get_max_threads());
  return static_cast<int>(std::max<int64_t>(t, 1));
}

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

// Runs f(i) for i in [0, count) on `threads` threads (static schedule); one thread, or one
// index, runs inline without entering an OpenMP region.
template <class F>
void parallel_for(int64_t count, int threads, F f) {
  if (threads <= 1 || count <= 1) {
    for (int64_t i = 0; i < count; ++i) f(i);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < count; ++i) f(i);
}

// Splits [0, units) into `parts` contiguous ranges and runs body(begin, end) on each, in parallel.
template <class F>
void parallel_ranges(int64_t units, int threads, F body) {
  const int64_t parts = std::min<int64_t>(threads, units);
  parallel_for(parts, threads,
               [&](int64_t p) { body(p * units / parts, (p + 1) * units / parts); });
}

// Cols backward sums (backward_sums_cols_partition) of data in cache walk four rows at a time
// while x and dy come to at most this many bytes per thread (AMD Zen 5: (8192, 256) and
// (2048, 1024) float32 at one thread, 16 MiB, were 1.0–1.16x slower two rows at a time, 8 MiB
// 0.9x faster; four rows at a time are faster than two up to this size, and as fast at 16 MiB),
// in tiles of this many channels.
constexpr int64_t kGroupedRowsBytes = int64_t{8} << 20;
constexpr int64_t kSumsTile = 1024;
static_assert(kSumsTile % kChannelAlign == 0,
              "tiles keep each channel on its vector or scalar path");

// Rows shorter than this are reduced channel by channel (StatsRowsChannel), grouping many rows
// of a channel per block; longer rows are walked in memory order by partitions.
constexpr int64_t kMinPartitionRow = 256;

// Per-channel parameters of an elementwise kernel in the input's dtype T, laid out as
// [mean_hi | mean_lo | columns...] (C values each): mean_hi = T(mean), mean_lo = T(mean − mean_hi),
// so that the kernels compute x − mean in T without losing the float64 mean's precision. With
// fold ≥ 0 (the cols kernels of outputs that stay in cache, whose kernels have the form
// … + column[fold] · (x − mean) + column[last]), mean_lo is folded into the last column instead:
// [mean_hi | columns... | column[last] − mean_lo · column[fold]] (docs/math.md), a load and a
// subtraction less per vector; in one binary, in-process, those kernels ran in 0.82–0.99x the
// time (AMD Zen 5). Streamed outputs keep mean_lo: built with the folded form for them too, the
// streamed channels-last normalize of (64, 256, 1024) float32 at one thread ran 10–30% slower in
// benchmark after benchmark, for no reason found. The storage is per calling thread and kept
// between calls, and only values whose bits change are written (UpdateParams): the other threads
// read these lines, and a line rewritten with the same values would still be taken from their
// caches (in eval mode nothing changes; (64, 2048) float32 eval at two threads: 18 -> 15 µs).
// Returns nullptr when a parameter is not finite in T (e.g. invstd of a denormal-variance channel
// overflows float32, or a channel's mean is NaN): such calls take the float64 reference kernel,
// which keeps every channel's result to itself. The storage extends a vector (of the widest target)
// past the last column: the masked row tails of the cols kernels load whole vectors of parameters
// and use only their first lanes.
template <class T>
const void* elementwise_params_t(int64_t C, const double* mean,
                                 std::initializer_list<const double*> columns, int64_t fold) {
  constexpr std::size_t kPadding = 256 / sizeof(T);
  KernelWorkspace& w = thread_workspace();
  AlignedBuffer<T>& params = [&w]() -> AlignedBuffer<T>& {
    if constexpr (std::is_same_v<T, float>)
      return w.params_f32;
    else
      return w.params_f64;
  }();
  T* P = params.get(static_cast<std::size_t>(C) * (2 + columns.size()) + kPadding);
  constexpr DType dtype = std::is_same_v<T, float> ? DType::Float32 : DType::Float64;
  const bool finite = HWY_DYNAMIC_DISPATCH(UpdateParams)(
      P, dtype, C, mean, columns.begin(), static_cast<int64_t>(columns.size()), fold);
  return finite ? P : nullptr;
}

const void* elementwise_params(const View3& x, const double* mean,
                               std::initializer_list<const double*> columns, int64_t fold) {
  if (x.dtype == DType::Float32) return elementwise_params_t<float>(x.C, mean, columns, fold);
  return elementwise_params_t<double>(x.C, mean, columns, fold);
}

// Values per cache line (64 bytes) of float64.
constexpr int64_t kLineValues = 64 / sizeof(double);

// `rows` rows of `ld` float64 values (ld a multiple of kLineValues), on a cache line: the
// per-partition outputs of the reductions, so that partitions written by different threads
// share no line.
double* partition_scratch(int64_t rows, int64_t ld) {
  return thread_workspace().partition_results.get(rows * ld);
}

// Units of elementwise_cols: rows (n, l) when the output's channels are contiguous, else blocks
// of channels of one n.
int64_t cols_units(const View3& x, const Out3& out) {
  return out.sC == 1 ? x.N * x.L : x.N * ((x.C + kChannelBlock - 1) / kChannelBlock);
}

}  // namespace

bool layout_applies(Layout layout, const View3& v) {
  return layout == Layout::UnitStrideL ? v.sL == 1 && v.L >= 8 : v.sC == 1;
}
bool layout_applies(Layout layout, const Out3& o) {
  return layout == Layout::UnitStrideL ? o.sL == 1 : o.sC == 1 || o.sL == 1;
}

// Chan merge, in order, of per-slot statistics (part_mean/part_m2: parts.slots rows of C values,
// ld apart), skipping empty slots. The merge weights depend on the slot only.
template <class Parts>
void merge_partitions(double* mean, double* m2, const Parts& parts, int64_t C, int64_t ld,
                      const double* part_mean, const double* part_m2) {
  double count = 0.0;
  for (int64_t p = 0; p < parts.slots; ++p) {
    const double nb = parts.values(p);
    if (nb == 0.0) continue;
    const double n = count + nb;
    HWY_DYNAMIC_DISPATCH(MergeSlot)
    (mean, m2, part_mean + p * ld, part_m2 + p * ld, nb / n, count * nb / n, count == 0.0, C);
    count = n;
  }
  if (count == 0.0) std::fill_n(mean, C, 0.0), std::fill_n(m2, C, 0.0);
}

// Per-slot sums (part_a/part_b: `parts` rows of C values, ld apart) added up in order.
void sum_partitions(double* a, double* b, int64_t parts, int64_t C, int64_t ld,
                    const double* part_a, const double* part_b) {
  for (int64_t p = 0; p < parts; ++p)
    HWY_DYNAMIC_DISPATCH(AddSlot)(a, b, part_a + p * ld, part_b + p * ld, p == 0, C);
  if (parts == 0) std::fill_n(a, C, 0.0), std::fill_n(b, C, 0.0);
}

// Runs kernel(p, a_s, b_s) for every partition p on `threads` threads, each writing its results
// (two rows of C values) into its slot s of the scratch, then combine(a, b, ld) over all slots in
// order.
template <class Parts, class Kernel, class Combine>
void over_partitions(const Parts& parts, int threads, int64_t C, Kernel kernel, Combine combine) {
  const int64_t ld = (C + kLineValues - 1) / kLineValues * kLineValues;
  double* a = partition_scratch(2 * parts.slots, ld);
  double* b = a + parts.slots * ld;
  parallel_for(parts.count, threads, [&](int64_t p) {
    const int64_t s = parts.slot(p);
    kernel(p, a + s * ld, b + s * ld);
  });
  combine(a, b, ld);
}

void channel_stats(Layout layout, double* mean, double* m2, const View3& x) {
  apply_environment_once();
  const int threads = threads_for(x.N * x.C * x.L);
  const int64_t C = x.C;
  if (layout == Layout::UnitStrideL && x.L < kMinPartitionRow) {
    parallel_for(C, threads, [&](int64_t c) {
      HWY_DYNAMIC_DISPATCH(StatsRowsChannel)(x, c, mean + c, m2 + c);
    });
    return;
  }
  auto merge = [&](const auto& parts) {
    return [&](const double* pm, const double* pq, int64_t ld) {
      merge_partitions(mean, m2, parts, C, ld, pm, pq);
    };
  };
  if (layout == Layout::UnitStrideL) {
    const RowsPartitions parts(x);
    over_partitions(
        parts, threads, C,
        [&](int64_t p, double* pm, double* pq) {
          HWY_DYNAMIC_DISPATCH(StatsRowsPartition)(x, parts.first(p), parts.last(p), pm, pq);
        },
        merge(parts));
  } else {
    const ColsPartitions parts(x);
    const bool prefetch = streams(x);  // from DRAM
    over_partitions(
        parts, threads, C,
        [&](int64_t p, double* pm, double* pq) {
          HWY_DYNAMIC_DISPATCH(StatsColsPartition)
          (x, parts.first(p), parts.last(p), parts.block, parts.channel_first(p),
           parts.channel_last(p), prefetch, pm, pq);
        },
        merge(parts));
  }
}

void normalize(Layout layout, const Out3& y, const View3& x, const double* mean,
               const double* scale, const double* shift) {
  apply_environment_once();
  const int threads = threads_for(x.N * x.C * x.L);
  const bool stream = streams(x);
  // y = s · (x − mean) + b: outputs of the cols kernels that stay in cache fold mean_lo into b.
  const bool fold = layout == Layout::UnitStrideC && !stream;
  const void* P = elementwise_params(x, mean, {scale, shift}, fold ? 0 : -1);
  if (P == nullptr) return reference::normalize(y, x, mean, scale, shift);
  if (layout == Layout::UnitStrideL) {
    parallel_ranges(x.N * x.C, threads, [&](int64_t i0, int64_t i1) {
      HWY_DYNAMIC_DISPATCH(NormalizeRows)(y, x, P, i0, i1, stream);
    });
  } else {
    parallel_ranges(cols_units(x, y), threads, [&](int64_t u0, int64_t u1) {
      HWY_DYNAMIC_DISPATCH(NormalizeCols)(y, x, P, u0, u1, stream);
    });
  }
}

void backward_sums(Layout layout, double* sum_dy, double* sum_dy_xmu, const View3& dy,
                   const View3& x, const double* mean) {
  apply_environment_once();
  const int threads = threads_for(2 * x.N * x.C * x.L);
  const int64_t C = x.C;
  if (layout == Layout::UnitStrideL && x.L < kMinPartitionRow) {
    parallel_for(C, threads, [&](int64_t c) {
      HWY_DYNAMIC_DISPATCH(BackwardSumsRowsChannel)(dy, x, mean, c, sum_dy + c, sum_dy_xmu + c);
    });
    return;
  }
  auto sum = [&](int64_t count) {
    return [&, count](const double* ps, const double* psx, int64_t ld) {
      sum_partitions(sum_dy, sum_dy_xmu, count, C, ld, ps, psx);
    };
  };
  if (layout == Layout::UnitStrideL) {
    const RowsPartitions parts(x);
    over_partitions(
        parts, threads, C,
        [&](int64_t p, double* ps, double* psx) {
          HWY_DYNAMIC_DISPATCH(BackwardSumsRowsPartition)
          (dy, x, mean, parts.first(p), parts.last(p), ps, psx);
        },
        sum(parts.slots));
  } else {
    const ColsPartitions parts(x);
    // How each partition walks its rows (backward_sums_cols_partition; the bits do not depend on
    // it): data from DRAM row by row across the partition's channels; data in cache four rows at
    // a time, in channel tiles, while x and dy come to at most kGroupedRowsBytes per thread.
    const bool from_memory = streams(x);
    const int step = !from_memory && 2 * bytes_of(x) <= threads * kGroupedRowsBytes ? 4 : 1;
    const int64_t tile = from_memory ? C : kSumsTile;
    over_partitions(
        parts, threads, C,
        [&](int64_t p, double* ps, double* psx) {
          HWY_DYNAMIC_DISPATCH(BackwardSumsColsPartition)
          (dy, x, mean, parts.first(p), parts.last(p), parts.channel_first(p),
           parts.channel_last(p), step, tile, ps, psx);
        },
        sum(parts.slots));
  }
}

void backward_input(Layout layout, const Out3& dx, const View3& dy, const View3& x,
                    const double* mean, const double* a, const double* b, const double* k) {
  apply_environment_once();
  const int threads = threads_for(2 * x.N * x.C * x.L);
  const bool stream = streams(x, 2);  // x and dy
  // dx = a · dy + b · (x − mean) + k: as in normalize, with mean_lo folded into k.
  const bool fold = layout == Layout::UnitStrideC && !stream;
  const void* P = elementwise_params(x, mean, {a, b, k}, fold ? 1 : -1);
  if (P == nullptr) return reference::backward_input(dx, dy, x, mean, a, b, k);
  if (layout == Layout::UnitStrideL) {
    parallel_ranges(x.N * x.C, threads, [&](int64_t i0, int64_t i1) {
      HWY_DYNAMIC_DISPATCH(BackwardInputRows)(dx, dy, x, P, i0, i1, stream);
    });
  } else {
    parallel_ranges(cols_units(x, dx), threads, [&](int64_t u0, int64_t u1) {
      HWY_DYNAMIC_DISPATCH(BackwardInputCols)(dx, dy, x, P, u0, u1, stream);
    });
  }
}

void invstd(double* invstd, const double* v, double divisor, double eps, int64_t C) {
  apply_environment_once();
  HWY_DYNAMIC_DISPATCH(InvStd)(invstd, v, divisor, eps, C);
}
void to_f64(double* out, const void* in, DType dtype, int64_t C) {
  apply_environment_once();
  HWY_DYNAMIC_DISPATCH(ToF64)(out, in, dtype, C);
}
void from_f64(void* out, DType dtype, const double* v, int64_t C) {
  apply_environment_once();
  HWY_DYNAMIC_DISPATCH(FromF64)(out, dtype, v, C);
}
void multiply(double* out, const double* a, const double* b, int64_t C) {
  apply_environment_once();
  HWY_DYNAMIC_DISPATCH(Multiply)(out, a, b, C);
}
void running_update(double* rmean, double* rvar, const double* mean, const double* m2,
                    double momentum, double unbias, int64_t C) {
  apply_environment_once();
  HWY_DYNAMIC_DISPATCH(RunningUpdate)(rmean, rvar, mean, m2, momentum, unbias, C);
}
void backward_coefficients(double* a, double* b, double* k, const double* w, const double* invstd,
                           const double* sum_dy, const double* sum_dy_xmu, double n, int64_t C) {
  apply_environment_once();
  HWY_DYNAMIC_DISPATCH(BackwardCoefficients)(a, b, k, w, invstd, sum_dy, sum_dy_xmu, n, C);
}
void merge_slot(double* mean, double* m2, const double* part_mean, const double* part_m2, double wb,
                double wab, bool first, int64_t C) {
  HWY_DYNAMIC_DISPATCH(MergeSlot)(mean, m2, part_mean, part_m2, wb, wab, first, C);
}
void add_slot(double* a, double* b, const double* part_a, const double* part_b, bool first,
              int64_t C) {
  HWY_DYNAMIC_DISPATCH(AddSlot)(a, b, part_a, part_b, first, C);
}
int64_t first_negative_sum(const double* v, double eps, int64_t C) {
  apply_environment_once();
  return HWY_DYNAMIC_DISPATCH(FirstNegativeSum)(v, eps, C);
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
  throw Error("SIMD target \"" + name +
              "\" (BN1D_SIMD_TARGET) is not compiled in or not supported by this CPU; available: " +
              available);
}

}  // namespace bn1d::kernels::simd
#endif  // HWY_ONCE
