// SPDX-License-Identifier: MIT
// The main Highway translation unit: compiled once per target (foreach_target), it defines each
// target's entry points of the statistics, the masked-rows kernels (simd_masked-inl.h) and the
// per-channel kernels (simd.hpp), and the HWY_EXPORT tables that dispatch to the active target.
// The other tensor kernels have their own such units, to compile in parallel (this one took
// ~70 s alone): simd_forward.cpp (normalize), simd_backward_sums.cpp, simd_backward_input.cpp.
// Each entry point processes one unit of work (a channel, a partition of rows, a range of output
// rows) serially (simd_units.hpp); simd_schedule.cpp splits calls into units and runs them on
// threads, simd_targets.cpp chooses the target.
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
#include "kernels/element.hpp"
#include "kernels/elementwise_params.hpp"
#include "kernels/reference.hpp"
#include "kernels/simd-inl.h"
#include "kernels/simd_channels-inl.h"
#include "kernels/simd_cols-inl.h"
#include "kernels/simd_dispatch-inl.h"
#include "kernels/simd_masked-inl.h"
#include "kernels/simd_rows-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {
// ---- Entry points of the statistics and masked-rows kernels -------------------------------

int64_t TargetId() { return HWY_TARGET; }

void StatsRowsChannel(const View3& x, int64_t c, double* mean, double* m2) {
  with_storage(x.dtype, [&]<class T>() { stats_rows_channel<T>(x, c, mean, m2); });
}
void StatsRowsPartition(const View3& x, int64_t u0, int64_t u1, double* mean, double* m2) {
  with_storage(x.dtype, [&]<class T>() { stats_rows_partition<T>(x, u0, u1, mean, m2); });
}
void StatsColsPartition(const View3& x, int64_t r0, int64_t r1, int64_t block, int64_t c0,
                        int64_t c1, bool prefetch, double* mean, double* m2) {
  with_storage(x.dtype, [&]<class T>() {
    stats_cols_partition<T>(x, r0, r1, block, c0, c1, prefetch, mean, m2);
  });
}
// Masked rows (simd_masked-inl.h): valid holds ComputeOf<T> values.
void StatsMaskedChannel(const View3& x, const void* valid, int64_t c, double count, double* mean,
                        double* m2) {
  with_storage(x.dtype, [&]<class T>() {
    stats_masked_channel<T>(x, static_cast<const ComputeOf<T>*>(valid), c, count, mean, m2);
  });
}
void BackwardSumsMaskedChannel(const View3& dy, const View3& x, const void* valid,
                               const double* mean, const Act& act, int64_t c, double* sum_dy,
                               double* sum_dy_xmu) {
  with_storage_act(x.dtype, act.kind, [&]<class T, Activation A>() {
    backward_sums_masked_channel<T, A>(dy, x, static_cast<const ComputeOf<T>*>(valid), mean, act, c,
                                       sum_dy, sum_dy_xmu);
  });
}
void NormalizeMaskedRows(const Out3& y, const View3& x, const void* valid, const double* mean,
                         const double* scale, const double* shift, const Act& act, int64_t i0,
                         int64_t i1, bool stream) {
  with_storage_act(x.dtype, act.kind, [&]<class T, Activation A>() {
    normalize_masked_rows<T, A>(y, x, static_cast<const ComputeOf<T>*>(valid), mean, scale, shift,
                                act.slope, i0, i1, stream);
  });
}
void BackwardInputMaskedRows(const Out3& dx, const View3& dy, const View3& x, const void* valid,
                             const double* mean, const double* a, const double* b, const double* k,
                             const Act& act, int64_t i0, int64_t i1, bool stream) {
  with_storage_act(x.dtype, act.kind, [&]<class T, Activation A>() {
    backward_input_masked_rows<T, A>(dx, dy, x, static_cast<const ComputeOf<T>*>(valid), mean, a, b,
                                     k, act, i0, i1, stream);
  });
}

// Zeros at out[0 … len − 1] (dtype's elements), streamed past the caches with @p stream (then
// followed by FlushStreams).
void ZeroRun(void* out, DType dtype, int64_t len, bool stream) {
  with_storage(dtype, [&]<class T>() {
    using CT = ComputeOf<T>;
    const hn::ScalableTag<CT> d;
    write_run(
        d, static_cast<T*>(out), len, stream, [&](int64_t, auto) { return hn::Zero(d); },
        [](int64_t) { return CT{0}; });
  });
}
// Orders the non-temporal stores made so far before any later store (one fence per batch of
// ZeroRun calls, not per call: each fence waits for the write-combining buffers).
void FlushStreams() { hwy::FlushStream(); }

// ---- Per-channel entry points ------------------------------------------------------------------

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

// Writes the parameter block at P (elementwise_params.hpp) from the float64 mean and the
// block.coefficients columns, only the values whose bits changed since the last call. The folded
// last coefficient gets −mean_lo · columns[fold] added in float64 before its one rounding to T,
// except where mean_lo is 0 (always for float64): −0 · s + (−0) would turn a −0 into +0, and the
// kernels keep the reference's signed zeros. Returns whether all values are finite.
template <class T>
bool update_params(T* P, const ParamBlock& block, const double* mean,
                   const double* const* columns) {
  const DD d;
  const auto N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t C = block.C, count = block.coefficients, last = count - 1, fold = block.fold;
  T* const mean_hi = block.mean_hi(P);
  T* const mean_lo = block.mean_lo(P);
  T* coefficient[kMaxCoefficients];
  for (int64_t k = 0; k < count; ++k) coefficient[k] = block.coefficient(P, k);
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
    store(hi, mean_hi + c);
    if (!block.folded()) store(ToT<T>(lo), mean_lo + c);
    for (int64_t k = 0; k < count; ++k) {
      VD v = hn::LoadU(d, columns[k] + c);
      if (block.folded() && k == last) {
        const VD folded = hn::NegMulAdd(lo, hn::LoadU(d, columns[fold] + c), v);
        v = hn::IfThenElse(hn::Eq(lo, hn::Zero(d)), v, folded);
      }
      store(ToT<T>(v), coefficient[k] + c);
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
    store_scalar(hi, mean_hi + c);
    if (!block.folded()) store_scalar(static_cast<T>(lo), mean_lo + c);
    for (int64_t k = 0; k < count; ++k) {
      double v = columns[k][c];
      if (block.folded() && k == last && lo != 0.0) v = std::fma(-lo, columns[fold][c], v);
      store_scalar(static_cast<T>(v), coefficient[k] + c);
    }
  }
  return finite;
}
bool UpdateParams(void* P, DType dtype, const ParamBlock& block, const double* mean,
                  const double* const* columns) {
  if (dtype == DType::Float32)  // P holds the compute type: float32, or float64 for the rest
    return update_params(static_cast<float*>(P), block, mean, columns);
  return update_params(static_cast<double*>(P), block, mean, columns);
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
#include "kernels/simd.hpp"
#include "kernels/simd_units.hpp"

namespace bn1d::kernels::simd {

HWY_EXPORT(TargetId);
HWY_EXPORT(StatsRowsChannel);
HWY_EXPORT(StatsRowsPartition);
HWY_EXPORT(StatsColsPartition);
HWY_EXPORT(UpdateParams);
HWY_EXPORT(ZeroRun);
HWY_EXPORT(FlushStreams);
HWY_EXPORT(StatsMaskedChannel);
HWY_EXPORT(BackwardSumsMaskedChannel);
HWY_EXPORT(NormalizeMaskedRows);
HWY_EXPORT(BackwardInputMaskedRows);
HWY_EXPORT(InvStd);
HWY_EXPORT(ToF64);
HWY_EXPORT(FromF64);
HWY_EXPORT(Multiply);
HWY_EXPORT(RunningUpdate);
HWY_EXPORT(BackwardCoefficients);
HWY_EXPORT(MergeSlot);
HWY_EXPORT(AddSlot);
HWY_EXPORT(FirstNegativeSum);

namespace units {

int64_t target_id() { return HWY_DYNAMIC_DISPATCH(TargetId)(); }
void stats_rows_channel(const View3& x, int64_t c, double* mean, double* m2) {
  HWY_DYNAMIC_DISPATCH(StatsRowsChannel)(x, c, mean, m2);
}
void stats_rows_partition(const View3& x, int64_t u0, int64_t u1, double* mean, double* m2) {
  HWY_DYNAMIC_DISPATCH(StatsRowsPartition)(x, u0, u1, mean, m2);
}
void stats_cols_partition(const View3& x, int64_t r0, int64_t r1, int64_t block, int64_t c0,
                          int64_t c1, bool prefetch, double* mean, double* m2) {
  HWY_DYNAMIC_DISPATCH(StatsColsPartition)(x, r0, r1, block, c0, c1, prefetch, mean, m2);
}
bool update_params(void* P, DType dtype, const ParamBlock& block, const double* mean,
                   const double* const* columns) {
  return HWY_DYNAMIC_DISPATCH(UpdateParams)(P, dtype, block, mean, columns);
}

void stats_masked_channel(const View3& x, const void* valid, int64_t c, double count, double* mean,
                          double* m2) {
  HWY_DYNAMIC_DISPATCH(StatsMaskedChannel)(x, valid, c, count, mean, m2);
}
void backward_sums_masked_channel(const View3& dy, const View3& x, const void* valid,
                                  const double* mean, const Act& act, int64_t c, double* sum_dy,
                                  double* sum_dy_xmu) {
  HWY_DYNAMIC_DISPATCH(BackwardSumsMaskedChannel)(dy, x, valid, mean, act, c, sum_dy, sum_dy_xmu);
}
void normalize_masked_rows(const Out3& y, const View3& x, const void* valid, const double* mean,
                           const double* scale, const double* shift, const Act& act, int64_t i0,
                           int64_t i1, bool stream) {
  HWY_DYNAMIC_DISPATCH(NormalizeMaskedRows)(y, x, valid, mean, scale, shift, act, i0, i1, stream);
}
void backward_input_masked_rows(const Out3& dx, const View3& dy, const View3& x, const void* valid,
                                const double* mean, const double* a, const double* b,
                                const double* k, const Act& act, int64_t i0, int64_t i1,
                                bool stream) {
  HWY_DYNAMIC_DISPATCH(BackwardInputMaskedRows)
  (dx, dy, x, valid, mean, a, b, k, act, i0, i1, stream);
}

}  // namespace units

void zero_run(void* out, DType dtype, int64_t len, bool stream) {
  apply_environment_once();
  HWY_DYNAMIC_DISPATCH(ZeroRun)(out, dtype, len, stream);
}

void flush_streams() { HWY_DYNAMIC_DISPATCH(FlushStreams)(); }

// ---- The per-channel kernels of simd.hpp ---------------------------------------------------

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

}  // namespace bn1d::kernels::simd
#endif  // HWY_ONCE
