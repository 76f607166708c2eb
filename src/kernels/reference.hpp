// SPDX-License-Identifier: MIT
// Scalar reference kernels: any strides, float64 arithmetic throughout, one rounding per output.
// They are the oracle the optimized kernels are tested against, and the generic strided path.
#pragma once

#include "kernels/view.hpp"

namespace bn1d::kernels::reference {

/// mean[c] and m2[c] = Σ (x − mean[c])² over the N·L values of channel c (two passes).
void channel_stats(double* mean, double* m2, const View3& x);

/// y[n, c, l] = (x − mean[c]) · scale[c] + shift[c], y of x's dtype.
void normalize(const Out3& y, const View3& x, const double* mean, const double* scale,
               const double* shift);

/// sum_dy[c] = Σ dy, sum_dy_xmu[c] = Σ dy · (x − mean[c]).
void backward_sums(double* sum_dy, double* sum_dy_xmu, const View3& dy, const View3& x,
                   const double* mean);

/// dx[n, c, l] = a[c] · dy + b[c] · (x − mean[c]) + k[c], dx of x's dtype.
void backward_input(const Out3& dx, const View3& dy, const View3& x, const double* mean,
                    const double* a, const double* b, const double* k);

/// invstd[c] = 1 / sqrt(v[c] / divisor + eps), or 0 where v[c] / divisor + eps == 0 (a constant
/// channel with eps = 0: PyTorch's convention, normalize to 0, not NaN). In place if invstd == v.
void invstd(double* invstd, const double* v, double divisor, double eps, int64_t C);

}  // namespace bn1d::kernels::reference
