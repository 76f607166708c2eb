// SPDX-License-Identifier: MIT
// Short rows and narrow channels walked as a wide cols view of "virtual channels".
//
// The cols kernels are fastest on rows of many contiguous channels. Two common shapes have few:
//   Runs:   a (N, C, L) input whose (c, l) values of each n are contiguous (sC = L, sL = 1) with
//           short rows, e.g. (256, 64, 7): each n is one row of W = C·L virtual channels, virtual
//           channel c·L + l holding the values x[:, c, l]. Channel c is the run of its L virtual
//           channels.
//   Cycles: a dense cols input (contiguous (N, C), or channels-last (N, L, C) memory) of narrow or
//           odd C, e.g. (4096, 13): g consecutive rows are one row of W = g·C virtual channels
//           (W a multiple of the widest vector chunk), virtual channel k·C + c holding every g-th
//           row's x[·, c]. Channel c is the cycle of virtual channels c, C + c, …; the rows left
//           over (fewer than g) are reduced or transformed as an ordinary cols view.
// Statistics and gradient sums are computed per virtual channel by the cols kernels, then folded
// into channels (docs/math.md): each virtual channel of a channel holds the same count n of
// values, so mean = Σ mean_v / G and M2 = Σ M2_v + n · Σ (mean_v − mean)² over its G virtual
// channels, in a fixed order. Elementwise ops use per-channel coefficients repeated over the
// virtual channels. Plans depend on the shape and strides only, so results do not depend on the
// thread count.
#pragma once

#include <cstdint>

#include "kernels/activation.hpp"
#include "kernels/view.hpp"

namespace bn1d::kernels::virtual_cols {

/// The op a plan is made for: the passes over the data differ in the row lengths they prefer.
enum class Op { Reduction, Elementwise };

/// How a call's views are walked as a cols view of width() virtual channels per row; kind None:
/// not at all (use the ordinary kernels).
struct Plan {
  enum class Kind { None, Runs, Cycles };
  Kind kind = Kind::None;
  int64_t C = 0, L = 0;  ///< the input's channels and length
  int64_t group = 0;     ///< virtual channels per channel: L (Runs) or g (Cycles)
  int64_t rows = 0;      ///< rows of the virtual view
  int64_t rest = 0;      ///< Cycles: rows (n, l) left over after rows · g
  int64_t width() const { return C * group; }
  explicit operator bool() const { return kind != Kind::None; }
};

/// The plan for input @p x and @p op (kind None when neither applies or brings nothing).
Plan plan(const View3& x, Op op);
/// Whether another view of the call (dy, or an output) has the memory layout the plan walks.
bool fits(const Plan& p, const View3& v);
bool fits(const Plan& p, const Out3& o);

/// The ops of reference.hpp through a plan that fits every view given.
void channel_stats(const Plan& p, double* mean, double* m2, const View3& x);
void normalize(const Plan& p, const Out3& y, const View3& x, const double* mean,
               const double* scale, const double* shift, const Act& act = {});
void backward_sums(const Plan& p, double* sum_dy, double* sum_dy_xmu, const View3& dy,
                   const View3& x, const double* mean, const Act& act = {});
void backward_input(const Plan& p, const Out3& dx, const View3& dy, const View3& x,
                    const double* mean, const double* a, const double* b, const double* k,
                    const Act& act = {});

}  // namespace bn1d::kernels::virtual_cols
