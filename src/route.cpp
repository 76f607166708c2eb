// SPDX-License-Identifier: MIT
#include "route.hpp"

#include "kernels/reference.hpp"

namespace bn1d::route {

void channel_stats(double* mean, double* m2, const kernels::View3& x) {
  kernels::reference::channel_stats(mean, m2, x);
}

void normalize(void* y, const kernels::View3& x, const double* mean, const double* scale,
               const double* shift) {
  kernels::reference::normalize(y, x, mean, scale, shift);
}

void backward_sums(double* sum_dy, double* sum_dy_xmu, const kernels::View3& dy,
                   const kernels::View3& x, const double* mean) {
  kernels::reference::backward_sums(sum_dy, sum_dy_xmu, dy, x, mean);
}

void backward_input(void* dx, const kernels::View3& dy, const kernels::View3& x,
                    const double* mean, const double* a, const double* b, const double* k) {
  kernels::reference::backward_input(dx, dy, x, mean, a, b, k);
}

}  // namespace bn1d::route
