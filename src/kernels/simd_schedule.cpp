// SPDX-License-Identifier: MIT
// How the tensor kernels of simd.hpp are run: each call is split into units of work that depend
// only on the shape (never on the thread count), run on OpenMP threads (simd_units.hpp), and the
// units' partial results are combined in a fixed order. Also decided here, per call: the number
// of threads, whether outputs are streamed past the caches, and how the partitions walk their
// rows.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "kernels/elementwise_params.hpp"
#include "kernels/gate_interval.hpp"
#include "kernels/partitions.hpp"
#include "kernels/reference.hpp"
#include "kernels/simd.hpp"
#include "kernels/simd_units.hpp"
#include "kernels/workspace.hpp"

namespace bn1d::kernels::simd {
namespace {

// Outputs are written with non-temporal stores when the call's inputs total this many bytes:
// inputs and output would not stay in cache anyway, and streaming saves reading every line before
// writing it. 8 MiB on Intel CPUs, 16 MiB elsewhere: docs/tuning.md#stream-threshold.
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

// The bytes of the batch the calling thread's calls are blocks of (BatchBytes), or 0.
thread_local int64_t batch_bytes = 0;

// Whether an op reading `inputs` tensors shaped like x (or like its batch) streams its output.
bool streams(const View3& x, int64_t inputs = 1) {
  return inputs * std::max(bytes_of(x), batch_bytes) >= stream_min_bytes();
}

// Threads for a call over `elements` values: one per kGrain of them, at most OpenMP's maximum.
int threads_for(int64_t elements) {
  if (omp_in_parallel()) return 1;  // a block of a larger batch (parallel_blocks.hpp)
  const int64_t t = std::min<int64_t>(elements / kGrain, omp_get_max_threads());
  return static_cast<int>(std::max<int64_t>(t, 1));
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

// The cols backward sums (backward_sums_cols_partition) of data in cache walk four rows at a time
// while x and dy come to at most kGroupedRowsBytes per thread (docs/tuning.md#grouped-rows), in
// tiles of kSumsTile channels (docs/tuning.md#sums-tiles).
constexpr int64_t kGroupedRowsBytes = int64_t{8} << 20;
constexpr int64_t kSumsTile = 1024;
static_assert(kSumsTile % kChannelAlign == 0,
              "tiles keep each channel on its vector or scalar path");

// Rows shorter than this are reduced channel by channel (units::stats_rows_channel), grouping many
// rows of a channel per block; longer rows are walked in memory order by partitions.
constexpr int64_t kMinPartitionRow = 256;

// The parameter block (elementwise_params.hpp) of an elementwise kernel, in the input's dtype T,
// from the float64 mean and coefficient columns, in this thread's workspace. Only values whose
// bits change are written: docs/tuning.md#params-written-if-changed. Sized for either form (so
// that switching forms does not grow it) plus a vector of the widest target: the masked
// row tails of the cols kernels load whole vectors of parameters and use only their first lanes.
// Returns nullptr when a parameter is not finite in T (e.g. invstd of a denormal-variance channel
// overflows float32, or a channel's mean is NaN): such calls take the float64 reference kernel,
// which keeps every channel's result to itself.
template <class T>
const void* elementwise_params_t(const ParamBlock& block, const double* mean,
                                 const double* const* columns) {
  constexpr std::size_t kPadding = 256 / sizeof(T);
  KernelWorkspace& w = thread_workspace();
  AlignedBuffer<T>& params = [&w]() -> AlignedBuffer<T>& {
    if constexpr (std::is_same_v<T, float>)
      return w.params_f32;
    else
      return w.params_f64;
  }();
  T* P = params.get(static_cast<std::size_t>(block.capacity()) + kPadding);
  constexpr DType dtype = std::is_same_v<T, float> ? DType::Float32 : DType::Float64;
  const bool finite = units::update_params(P, dtype, block, mean, columns);
  return finite ? P : nullptr;
}

const void* elementwise_params(const View3& x, const ParamBlock& block, const double* mean,
                               std::initializer_list<const double*> columns) {
  if (x.dtype == DType::Float32) return elementwise_params_t<float>(block, mean, columns.begin());
  return elementwise_params_t<double>(block, mean, columns.begin());
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

bool with_gate_tests(Act& act, DType dtype, int64_t C, const double* mean) {
  if (!act.enabled() || act.gate_keep != nullptr) return true;
  KernelWorkspace& w = thread_workspace();
  uint64_t* masks = w.gate_masks.get(2 * C);
  double* max = w.gate_max.get(C);
  if (!gate_tests(dtype, act.kind, mean, act.scale, act.shift, C, masks, masks + C, max))
    return false;
  act.gate_keep = masks, act.gate_flip = masks + C, act.gate_max = max;
  return true;
}

DType masked_valid_dtype(DType dtype) {
  return dtype == DType::Float32 ? DType::Float32 : DType::Float64;
}

void masked_channel_stats(double* mean, double* m2, const View3& x, const void* valid,
                          int64_t count) {
  apply_environment_once();
  parallel_for(x.C, threads_for(x.N * x.C * x.L), [&](int64_t c) {
    units::stats_masked_channel(x, valid, c, static_cast<double>(count), mean, m2);
  });
}

bool masked_backward_sums(double* sum_dy, double* sum_dy_xmu, const View3& dy, const View3& x,
                          const void* valid, const double* mean, const Act& act) {
  apply_environment_once();
  Act gated = act;
  if (!with_gate_tests(gated, x.dtype, x.C, mean)) return false;
  parallel_for(x.C, threads_for(2 * x.N * x.C * x.L), [&](int64_t c) {
    units::backward_sums_masked_channel(dy, x, valid, mean, gated, c, sum_dy, sum_dy_xmu);
  });
  return true;
}

// Whether every value of the columns is finite once rounded to float32 (float32 inputs compute
// in float32; the others in float64, where they are finite already).
static bool finite_in_compute_type(const View3& x, std::initializer_list<const double*> columns) {
  if (x.dtype != DType::Float32) return true;
  for (const double* column : columns)
    for (int64_t c = 0; c < x.C; ++c)
      if (!std::isfinite(static_cast<float>(column[c]))) return false;
  return true;
}

bool masked_normalize(const Out3& y, const View3& x, const void* valid, const double* mean,
                      const double* scale, const double* shift, const Act& act) {
  apply_environment_once();
  if (!finite_in_compute_type(x, {mean, scale, shift})) return false;
  const bool stream = streams(x);
  parallel_ranges(x.N * x.C, threads_for(x.N * x.C * x.L), [&](int64_t i0, int64_t i1) {
    units::normalize_masked_rows(y, x, valid, mean, scale, shift, act, i0, i1, stream);
  });
  return true;
}

bool masked_backward_input(const Out3& dx, const View3& dy, const View3& x, const void* valid,
                           const double* mean, const double* a, const double* b, const double* k,
                           const Act& act) {
  apply_environment_once();
  if (!finite_in_compute_type(x, {mean, a, b, k})) return false;
  if (act.enabled() && !finite_in_compute_type(x, {act.scale, act.shift})) return false;
  const bool stream = streams(x, 2);
  parallel_ranges(x.N * x.C, threads_for(2 * x.N * x.C * x.L), [&](int64_t i0, int64_t i1) {
    units::backward_input_masked_rows(dx, dy, x, valid, mean, a, b, k, act, i0, i1, stream);
  });
  return true;
}

bool streams_output(int64_t bytes) { return bytes >= stream_min_bytes(); }

BatchBytes::BatchBytes(int64_t bytes) noexcept : previous_(batch_bytes) { batch_bytes = bytes; }

BatchBytes::~BatchBytes() { batch_bytes = previous_; }

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
    merge_slot(mean, m2, part_mean + p * ld, part_m2 + p * ld, nb / n, count * nb / n, count == 0.0,
               C);
    count = n;
  }
  if (count == 0.0) std::fill_n(mean, C, 0.0), std::fill_n(m2, C, 0.0);
}

// Per-slot sums (part_a/part_b: `parts` rows of C values, ld apart) added up in order.
void sum_partitions(double* a, double* b, int64_t parts, int64_t C, int64_t ld,
                    const double* part_a, const double* part_b) {
  for (int64_t p = 0; p < parts; ++p) add_slot(a, b, part_a + p * ld, part_b + p * ld, p == 0, C);
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
    parallel_for(C, threads, [&](int64_t c) { units::stats_rows_channel(x, c, mean + c, m2 + c); });
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
          units::stats_rows_partition(x, parts.first(p), parts.last(p), pm, pq);
        },
        merge(parts));
  } else {
    const ColsPartitions parts(x);
    const bool prefetch = streams(x);  // from DRAM
    over_partitions(
        parts, threads, C,
        [&](int64_t p, double* pm, double* pq) {
          units::stats_cols_partition(x, parts.first(p), parts.last(p), parts.block,
                                      parts.channel_first(p), parts.channel_last(p), prefetch, pm,
                                      pq);
        },
        merge(parts));
  }
}

void normalize(Layout layout, const Out3& y, const View3& x, const double* mean,
               const double* scale, const double* shift, const Act& act) {
  apply_environment_once();
  const int threads = threads_for(x.N * x.C * x.L);
  const bool stream = streams(x);
  // With an activation the block is unfolded: z as ActChannel::input forms it.
  const ParamBlock block =
      normalize_block(x.C, !act.enabled() && folds_mean_lo(layout == Layout::UnitStrideC, stream));
  const void* P = elementwise_params(x, block, mean, {scale, shift});
  if (P == nullptr) return reference::normalize(y, x, mean, scale, shift, act);
  if (layout == Layout::UnitStrideL) {
    parallel_ranges(x.N * x.C, threads, [&](int64_t i0, int64_t i1) {
      units::normalize_rows(y, x, P, block, act, i0, i1, stream);
    });
  } else {
    parallel_ranges(cols_units(x, y), threads, [&](int64_t u0, int64_t u1) {
      units::normalize_cols(y, x, P, block, act, u0, u1, stream);
    });
  }
}

void backward_sums(Layout layout, double* sum_dy, double* sum_dy_xmu, const View3& dy,
                   const View3& x, const double* mean, const Act& act) {
  apply_environment_once();
  const int threads = threads_for(2 * x.N * x.C * x.L);
  const int64_t C = x.C;
  Act gated = act;
  if (!with_gate_tests(gated, x.dtype, x.C, mean))
    return reference::backward_sums(sum_dy, sum_dy_xmu, dy, x, mean, act);
  if (layout == Layout::UnitStrideL && x.L < kMinPartitionRow) {
    parallel_for(C, threads, [&](int64_t c) {
      units::backward_sums_rows_channel(dy, x, mean, gated, c, sum_dy + c, sum_dy_xmu + c);
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
          units::backward_sums_rows_partition(dy, x, mean, gated, parts.first(p), parts.last(p), ps,
                                              psx);
        },
        sum(parts.slots));
  } else {
    const ColsPartitions parts(x);
    // How each partition walks its rows (backward_sums_cols_partition; the bits do not depend on
    // it): data from DRAM row by row across the partition's channels; data in cache four rows at
    // a time, in channel tiles, while x and dy come to at most kGroupedRowsBytes per thread.
    const bool from_memory = streams(x);
    const int step = !from_memory && 2 * bytes_of(x) <= threads * kGroupedRowsBytes ? 4 : 1;
    const int64_t tile = from_memory ? C : act.enabled() ? kSumsTile / 2 : kSumsTile;
    over_partitions(
        parts, threads, C,
        [&](int64_t p, double* ps, double* psx) {
          units::backward_sums_cols_partition(dy, x, mean, gated, parts.first(p), parts.last(p),
                                              parts.channel_first(p), parts.channel_last(p), step,
                                              tile, ps, psx);
        },
        sum(parts.slots));
  }
}

void backward_input(Layout layout, const Out3& dx, const View3& dy, const View3& x,
                    const double* mean, const double* a, const double* b, const double* k,
                    const Act& act) {
  apply_environment_once();
  const int threads = threads_for(2 * x.N * x.C * x.L);
  const bool stream = streams(x, 2);  // x and dy
  const ParamBlock block =
      act.enabled()
          ? backward_input_act_block(x.C)
          : backward_input_block(x.C, folds_mean_lo(layout == Layout::UnitStrideC, stream));
  const void* P = act.enabled()
                      ? elementwise_params(x, block, mean, {a, b, k, act.scale, act.shift})
                      : elementwise_params(x, block, mean, {a, b, k});
  if (P == nullptr) return reference::backward_input(dx, dy, x, mean, a, b, k, act);
  if (layout == Layout::UnitStrideL) {
    parallel_ranges(x.N * x.C, threads, [&](int64_t i0, int64_t i1) {
      units::backward_input_rows(dx, dy, x, P, block, act, i0, i1, stream);
    });
  } else {
    parallel_ranges(cols_units(x, dx), threads, [&](int64_t u0, int64_t u1) {
      units::backward_input_cols(dx, dy, x, P, block, act, u0, u1, stream);
    });
  }
}

}  // namespace bn1d::kernels::simd
