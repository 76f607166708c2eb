// SPDX-License-Identifier: MIT
// Routing by layout, decided once per call: the SIMD kernels take views with unit stride along L
// (Layout::UnitStrideL) or along C (Layout::UnitStrideC); everything else (e.g. a column-major
// R matrix, negative or odd strides) goes to the scalar reference kernels. Short rows and narrow
// channels of suitable memory layouts are walked as a wide cols view first (virtual_cols.hpp).
#include "route.hpp"

#include <algorithm>
#include <initializer_list>

#include "kernels/reference.hpp"
#include "kernels/simd.hpp"
#include "kernels/virtual_cols.hpp"

namespace bn1d::route {
namespace {

using kernels::simd::Layout;
namespace virtual_cols = kernels::virtual_cols;

// The SIMD layout that applies to every view (and output) given, if any.
template <class... Views>
bool simd_layout(Layout& layout, const Views&... views) {
  for (const Layout candidate : {Layout::UnitStrideL, Layout::UnitStrideC}) {
    if ((kernels::simd::layout_applies(candidate, views) && ...)) {
      layout = candidate;
      return true;
    }
  }
  return false;
}

// A view without values: nothing to read, and its strides may be anything (the kernels would
// form row pointers from them).
bool no_values(const kernels::View3& x) { return x.N == 0 || x.C == 0 || x.L == 0; }

}  // namespace

void channel_stats(double* mean, double* m2, const kernels::View3& x) {
  Layout layout;
  if (no_values(x)) {
    std::fill_n(mean, x.C, 0.0);
    std::fill_n(m2, x.C, 0.0);
  } else if (const auto plan = virtual_cols::plan(x, virtual_cols::Op::Reduction)) {
    virtual_cols::channel_stats(plan, mean, m2, x);
  } else if (simd_layout(layout, x)) {
    kernels::simd::channel_stats(layout, mean, m2, x);
  } else {
    kernels::reference::channel_stats(mean, m2, x);
  }
}

void normalize(const kernels::Out3& y, const kernels::View3& x, const double* mean,
               const double* scale, const double* shift, const kernels::Act& act) {
  Layout layout;
  if (no_values(x)) return;
  if (const auto plan = virtual_cols::plan(x, virtual_cols::Op::Elementwise);
      plan && virtual_cols::fits(plan, y))
    virtual_cols::normalize(plan, y, x, mean, scale, shift, act);
  else if (simd_layout(layout, x, y))
    kernels::simd::normalize(layout, y, x, mean, scale, shift, act);
  else
    kernels::reference::normalize(y, x, mean, scale, shift, act);
}

void backward_sums(double* sum_dy, double* sum_dy_xmu, const kernels::View3& dy,
                   const kernels::View3& x, const double* mean, const kernels::Act& act) {
  Layout layout;
  if (no_values(x)) {
    std::fill_n(sum_dy, x.C, 0.0);
    std::fill_n(sum_dy_xmu, x.C, 0.0);
  } else if (const auto plan = virtual_cols::plan(x, virtual_cols::Op::Reduction);
             plan && virtual_cols::fits(plan, dy)) {
    virtual_cols::backward_sums(plan, sum_dy, sum_dy_xmu, dy, x, mean, act);
  } else if (simd_layout(layout, dy, x)) {
    kernels::simd::backward_sums(layout, sum_dy, sum_dy_xmu, dy, x, mean, act);
  } else {
    kernels::reference::backward_sums(sum_dy, sum_dy_xmu, dy, x, mean, act);
  }
}

void backward_input(const kernels::Out3& dx, const kernels::View3& dy, const kernels::View3& x,
                    const double* mean, const double* a, const double* b, const double* k,
                    const kernels::Act& act) {
  Layout layout;
  if (no_values(x)) return;
  if (const auto plan = virtual_cols::plan(x, virtual_cols::Op::Elementwise);
      plan && virtual_cols::fits(plan, dy) && virtual_cols::fits(plan, dx))
    virtual_cols::backward_input(plan, dx, dy, x, mean, a, b, k, act);
  else if (simd_layout(layout, dy, x, dx))
    kernels::simd::backward_input(layout, dx, dy, x, mean, a, b, k, act);
  else
    kernels::reference::backward_input(dx, dy, x, mean, a, b, k, act);
}

}  // namespace bn1d::route
