// SPDX-License-Identifier: MIT
// Routing: picks the kernel for a validated view by its memory layout. The functional API calls
// these; they have the signatures of the kernels (outputs first, pointers and sizes).
#pragma once

#include "kernels/view.hpp"

namespace bn1d::route {

/// mean[c] and m2[c] = Σ (x − mean[c])² over the N·L values of channel c (0 and 0 without values).
/// Every function here accepts views without values (N, C or L of 0): it then reads nothing.
void channel_stats(double* mean, double* m2, const kernels::View3& x);

/// y = (x − mean[c]) · scale[c] + shift[c], y of x's dtype.
void normalize(const kernels::Out3& y, const kernels::View3& x, const double* mean,
               const double* scale, const double* shift);

/// sum_dy[c] = Σ dy, sum_dy_xmu[c] = Σ dy · (x − mean[c]) (0 and 0 without values).
void backward_sums(double* sum_dy, double* sum_dy_xmu, const kernels::View3& dy,
                   const kernels::View3& x, const double* mean);

/// dx = a[c] · dy + b[c] · (x − mean[c]) + k[c], dx of x's dtype.
void backward_input(const kernels::Out3& dx, const kernels::View3& dy, const kernels::View3& x,
                    const double* mean, const double* a, const double* b, const double* k);

/// invstd[c] = 1 / sqrt(v[c] / divisor + eps), or 0 where v[c] / divisor + eps == 0 (a constant
/// channel with eps = 0: PyTorch's convention). In place if invstd == v.
void invstd(double* invstd, const double* v, double divisor, double eps, int64_t C);

// ---- Per-channel {C} arrays (kernels/reference.hpp has each one's arithmetic) ----------------
/// out[c] = in[c] (contiguous float32 or float64) as float64.
void to_f64(double* out, const void* in, DType dtype, int64_t C);
/// out[c] (contiguous float32 or float64) = v[c], rounded once.
void from_f64(void* out, DType dtype, const double* v, int64_t C);
/// out[c] = a[c] · b[c].
void multiply(double* out, const double* a, const double* b, int64_t C);
/// The running statistics' momentum update, in place (reference::running_update).
void running_update(double* rmean, double* rvar, const double* mean, const double* m2,
                    double momentum, double unbias, int64_t C);
/// The coefficients a, b, k of backward_input (reference::backward_coefficients).
void backward_coefficients(double* a, double* b, double* k, const double* w, const double* invstd,
                           const double* sum_dy, const double* sum_dy_xmu, double n, int64_t C);
/// The first c with v[c] + eps < 0, or C when there is none.
int64_t first_negative_sum(const double* v, double eps, int64_t C);

}  // namespace bn1d::route
