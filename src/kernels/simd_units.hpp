// SPDX-License-Identifier: MIT
// One unit of work of a tensor kernel, run serially on the active target (the Highway TUs
// dispatch each to its per-target entry point: statistics and masked rows in simd.cpp, normalize
// in simd_forward.cpp, gradient sums in simd_backward_sums.cpp, input gradient in
// simd_backward_input.cpp). The kernels they name are in simd_rows-inl.h (Layout::UnitStrideL),
// simd_cols-inl.h (Layout::UnitStrideC) and simd_masked-inl.h; simd_schedule.cpp splits the calls
// of simd.hpp into these units.
#pragma once

#include <cstdint>

#include "kernels/activation.hpp"
#include "kernels/elementwise_params.hpp"
#include "kernels/view.hpp"

namespace bn1d::kernels::simd {

/// Applies BN1D_SIMD_TARGET (see force_target) once, before the first kernel call
/// (simd_targets.cpp).
void apply_environment_once();

namespace units {

/// The active target (a HWY_* bit).
int64_t target_id();

// Statistics and gradient sums: one channel (short rows), or one partition (partitions.hpp).
void stats_rows_channel(const View3& x, int64_t c, double* mean, double* m2);
void stats_rows_partition(const View3& x, int64_t u0, int64_t u1, double* mean, double* m2);
// The gradient sums gate dy by act (activation.hpp) when it is enabled.
void backward_sums_rows_channel(const View3& dy, const View3& x, const double* mean, const Act& act,
                                int64_t c, double* sum_dy, double* sum_dy_xmu);
void backward_sums_rows_partition(const View3& dy, const View3& x, const double* mean,
                                  const Act& act, int64_t u0, int64_t u1, double* sum_dy,
                                  double* sum_dy_xmu);
void stats_cols_partition(const View3& x, int64_t r0, int64_t r1, int64_t block, int64_t c0,
                          int64_t c1, bool prefetch, double* mean, double* m2);
void backward_sums_cols_partition(const View3& dy, const View3& x, const double* mean,
                                  const Act& act, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                                  int step, int64_t tile, double* sum_dy, double* sum_dy_xmu);

// Elementwise ops over a range of units, the parameters at P in x's compute type laid out as
// `block` says, with the activation act.kind (act.slope); with `stream`, the outputs go out as
// non-temporal stores.
void normalize_rows(const Out3& y, const View3& x, const void* P, const ParamBlock& block,
                    const Act& act, int64_t i0, int64_t i1, bool stream);
void normalize_cols(const Out3& y, const View3& x, const void* P, const ParamBlock& block,
                    const Act& act, int64_t u0, int64_t u1, bool stream);
void backward_input_rows(const Out3& dx, const View3& dy, const View3& x, const void* P,
                         const ParamBlock& block, const Act& act, int64_t i0, int64_t i1,
                         bool stream);
void backward_input_cols(const Out3& dx, const View3& dy, const View3& x, const void* P,
                         const ParamBlock& block, const Act& act, int64_t u0, int64_t u1,
                         bool stream);

// Masked rows (simd_masked-inl.h): the valid positions of sample n at valid + n·L, in the
// compute type of x (float for float32, double otherwise); one channel, or output rows i0 … i1−1.
void stats_masked_channel(const View3& x, const void* valid, int64_t c, double count, double* mean,
                          double* m2);
void backward_sums_masked_channel(const View3& dy, const View3& x, const void* valid,
                                  const double* mean, const Act& act, int64_t c, double* sum_dy,
                                  double* sum_dy_xmu);
void normalize_masked_rows(const Out3& y, const View3& x, const void* valid, const double* mean,
                           const double* scale, const double* shift, const Act& act, int64_t i0,
                           int64_t i1, bool stream);
void backward_input_masked_rows(const Out3& dx, const View3& dy, const View3& x, const void* valid,
                                const double* mean, const double* a, const double* b,
                                const double* k, const Act& act, int64_t i0, int64_t i1,
                                bool stream);

/// Writes the parameter block at P (in @p dtype) from the float64 mean and coefficient columns,
/// only the values whose bits changed; returns whether all are finite.
bool update_params(void* P, DType dtype, const ParamBlock& block, const double* mean,
                   const double* const* columns);

}  // namespace units
}  // namespace bn1d::kernels::simd
