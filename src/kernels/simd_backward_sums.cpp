// SPDX-License-Identifier: MIT
// The Highway translation unit of the backward gradient sums of both layouts (the masked one is
// in simd.cpp): compiled once per target (foreach_target), it defines each target's entry points
// and the HWY_EXPORT tables and units:: wrappers that dispatch to the active target
// (simd_units.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/simd_backward_sums.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include <cstdint>
// clang-format on
#include "hwy/highway.h"
#include "kernels/simd-inl.h"
#include "kernels/simd_cols-inl.h"
#include "kernels/simd_dispatch-inl.h"
#include "kernels/simd_rows-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {

void BackwardSumsRowsChannel(const View3& dy, const View3& x, const double* mean, const Act& act,
                             int64_t c, double* sum_dy, double* sum_dy_xmu) {
  with_storage_act(x.dtype, act.kind, [&]<class T, Activation A>() {
    backward_sums_rows_channel<T, A>(dy, x, mean, act, c, sum_dy, sum_dy_xmu);
  });
}
void BackwardSumsRowsPartition(const View3& dy, const View3& x, const double* mean, const Act& act,
                               int64_t u0, int64_t u1, double* sum_dy, double* sum_dy_xmu) {
  with_storage_act(x.dtype, act.kind, [&]<class T, Activation A>() {
    backward_sums_rows_partition<T, A>(dy, x, mean, act, u0, u1, sum_dy, sum_dy_xmu);
  });
}
void BackwardSumsColsPartition(const View3& dy, const View3& x, const double* mean, const Act& act,
                               int64_t r0, int64_t r1, int64_t c0, int64_t c1, int step,
                               int64_t tile, double* sum_dy, double* sum_dy_xmu) {
  with_storage_act(x.dtype, act.kind, [&]<class T, Activation A>() {
    backward_sums_cols_partition<T, A>(dy, x, mean, act, r0, r1, c0, c1, step, tile, sum_dy,
                                       sum_dy_xmu);
  });
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "kernels/simd_units.hpp"

namespace bn1d::kernels::simd {

HWY_EXPORT(BackwardSumsRowsChannel);
HWY_EXPORT(BackwardSumsRowsPartition);
HWY_EXPORT(BackwardSumsColsPartition);

namespace units {

void backward_sums_rows_channel(const View3& dy, const View3& x, const double* mean, const Act& act,
                                int64_t c, double* sum_dy, double* sum_dy_xmu) {
  HWY_DYNAMIC_DISPATCH(BackwardSumsRowsChannel)(dy, x, mean, act, c, sum_dy, sum_dy_xmu);
}
void backward_sums_rows_partition(const View3& dy, const View3& x, const double* mean,
                                  const Act& act, int64_t u0, int64_t u1, double* sum_dy,
                                  double* sum_dy_xmu) {
  HWY_DYNAMIC_DISPATCH(BackwardSumsRowsPartition)(dy, x, mean, act, u0, u1, sum_dy, sum_dy_xmu);
}
void backward_sums_cols_partition(const View3& dy, const View3& x, const double* mean,
                                  const Act& act, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                                  int step, int64_t tile, double* sum_dy, double* sum_dy_xmu) {
  HWY_DYNAMIC_DISPATCH(BackwardSumsColsPartition)
  (dy, x, mean, act, r0, r1, c0, c1, step, tile, sum_dy, sum_dy_xmu);
}

}  // namespace units
}  // namespace bn1d::kernels::simd
#endif  // HWY_ONCE
