// SPDX-License-Identifier: MIT
// Routing: picks the kernel for a validated view by its memory layout. The functional API calls
// these; they have the signatures of the kernels (outputs first, pointers and sizes).
#pragma once

#include "kernels/simd.hpp"
#include "kernels/view.hpp"

namespace bn1d::route {

/// mean[c] and m2[c] = Σ (x − mean[c])² over the N·L values of channel c (0 and 0 without values).
/// Every function here accepts views without values (N, C or L of 0): it then reads nothing.
void channel_stats(double* mean, double* m2, const kernels::View3& x);

/// y = act((x − mean[c]) · scale[c] + shift[c]), y of x's dtype (kernels/activation.hpp).
void normalize(const kernels::Out3& y, const kernels::View3& x, const double* mean,
               const double* scale, const double* shift, const kernels::Act& act = {});

/// sum_dy[c] = Σ dy', sum_dy_xmu[c] = Σ dy' · (x − mean[c]) (0 and 0 without values), dy' = dy
/// gated by the activation at z = (x − mean) · act.scale + act.shift.
void backward_sums(double* sum_dy, double* sum_dy_xmu, const kernels::View3& dy,
                   const kernels::View3& x, const double* mean, const kernels::Act& act = {});

/// dx = a[c] · dy' + b[c] · (x − mean[c]) + k[c] (dy' as in backward_sums), dx of x's dtype.
void backward_input(const kernels::Out3& dx, const kernels::View3& dy, const kernels::View3& x,
                    const double* mean, const double* a, const double* b, const double* k,
                    const kernels::Act& act = {});

// Per-channel {C} arrays have no layout to choose: their SIMD kernels serve every call
// (kernels/simd.hpp; each one's arithmetic is in kernels/reference.hpp).
using kernels::simd::backward_coefficients;
using kernels::simd::first_negative_sum;
using kernels::simd::from_f64;
using kernels::simd::invstd;
using kernels::simd::multiply;
using kernels::simd::running_update;
using kernels::simd::to_f64;

}  // namespace bn1d::route
