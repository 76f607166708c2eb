// SPDX-License-Identifier: MIT
// The routed kernels over one group of a partitioned batch (partition.hpp): each block of the
// group is a sub-view handed to route.hpp's kernels; statistics of several blocks are merged
// with Chan's formula (sums added) in block order, so results do not depend on the thread count.
#pragma once

#include "kernels/activation.hpp"
#include "kernels/view.hpp"
#include "partition.hpp"

namespace bn1d::route {

/// route::channel_stats over the values of group @p g (mean 0 and M2 0 without values).
void group_stats(double* mean, double* m2, const kernels::View3& x, const detail::Partition& part,
                 int64_t g);
/// route::normalize at the positions of group @p g; 0 at the positions outside part.valid.
void group_normalize(const kernels::Out3& y, const kernels::View3& x, const detail::Partition& part,
                     int64_t g, const double* mean, const double* scale, const double* shift,
                     const kernels::Act& act = {});
/// route::backward_sums over the values of group @p g.
void group_backward_sums(double* sum_dy, double* sum_dy_xmu, const kernels::View3& dy,
                         const kernels::View3& x, const detail::Partition& part, int64_t g,
                         const double* mean, const kernels::Act& act = {});
/// route::backward_input at the positions of group @p g; 0 outside part.valid.
void group_backward_input(const kernels::Out3& dx, const kernels::View3& dy,
                          const kernels::View3& x, const detail::Partition& part, int64_t g,
                          const double* mean, const double* a, const double* b, const double* k,
                          const kernels::Act& act = {});

}  // namespace bn1d::route
