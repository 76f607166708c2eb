// SPDX-License-Identifier: MIT
// Scalar reference kernels: any strides, float64 arithmetic throughout, one rounding per output.
// They are the oracle the optimized kernels are tested against, and the generic strided path.
#pragma once

#include "kernels/activation.hpp"
#include "kernels/view.hpp"

namespace bn1d::kernels::reference {

/// mean[c] and m2[c] = Σ (x − mean[c])² over the N·L values of channel c (two passes).
void channel_stats(double* mean, double* m2, const View3& x);

/// y[n, c, l] = act(z), z = (x − mean[c]) · scale[c] + shift[c] (act_input), y of x's dtype.
void normalize(const Out3& y, const View3& x, const double* mean, const double* scale,
               const double* shift, const Act& act = {});

/// sum_dy[c] = Σ dy', sum_dy_xmu[c] = Σ dy' · (x − mean[c]), dy' = dy gated by the activation
/// at z (dy' = dy without one).
void backward_sums(double* sum_dy, double* sum_dy_xmu, const View3& dy, const View3& x,
                   const double* mean, const Act& act = {});

/// dx[n, c, l] = a[c] · dy' + b[c] · (x − mean[c]) + k[c] (dy' as in backward_sums), dx of x's
/// dtype.
void backward_input(const Out3& dx, const View3& dy, const View3& x, const double* mean,
                    const double* a, const double* b, const double* k, const Act& act = {});

/// invstd[c] = 1 / sqrt(v[c] / divisor + eps), or 0 where v[c] / divisor + eps == 0 (a constant
/// channel with eps = 0: PyTorch's convention, normalize to 0, not NaN). In place if invstd == v.
void invstd(double* invstd, const double* v, double divisor, double eps, int64_t C);

// ---- Per-channel coefficients ({C} float64 arrays), computed between the passes ---------------
// Each value is rounded as written, operation by operation (this file is compiled without
// floating-point contraction): the SIMD versions give the same bits on every target.

/// The running statistics' update with the batch's (momentum convention of PyTorch: the new
/// value weighs momentum): rmean = (1 − momentum) · rmean + momentum · mean[c] and
/// rvar = (1 − momentum) · rvar + momentum · (m2[c] · unbias), unbias = 1 / (count − 1) (the
/// unbiased variance). In place.
void running_update(double* rmean, double* rvar, const double* mean, const double* m2,
                    double momentum, double unbias, int64_t C);
/// The coefficients of dx = a · dy + b · (x − mean) + k: g = w · invstd (invstd without weight,
/// w == nullptr), a = g, and with batch statistics (sum_dy != nullptr, over n values)
/// k = −g · Σdy / n and b = −g · invstd² · Σdy(x − mean) / n; else b = k = 0.
void backward_coefficients(double* a, double* b, double* k, const double* w, const double* invstd,
                           const double* sum_dy, const double* sum_dy_xmu, double n, int64_t C);
/// Chan's merge of one partition's (mean, M2) into (mean, m2), with the weights wb = nb / n and
/// wab = na · nb / n of its count nb and the na values before it; with @p first the previous
/// values are taken as 0 (and not read).
void merge_slot(double* mean, double* m2, const double* part_mean, const double* part_m2, double wb,
                double wab, bool first, int64_t C);
/// a[c] += part_a[c], b[c] += part_b[c]; with @p first, a and b are taken as 0 (and not read).
void add_slot(double* a, double* b, const double* part_a, const double* part_b, bool first,
              int64_t C);

}  // namespace bn1d::kernels::reference
