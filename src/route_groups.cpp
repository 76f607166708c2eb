// SPDX-License-Identifier: MIT
// The routed kernels over the blocks of one group (route_groups.hpp).
#include "route_groups.hpp"

#include <algorithm>
#include <cstring>

#include "parallel_blocks.hpp"
#include "route.hpp"
#include "step_workspace.hpp"

namespace bn1d::route {
namespace {

using detail::for_each_block;
using detail::sub_view;
using kernels::Out3;
using kernels::View3;

// The kernels on blocks of @p x choose their stores as one call on all of x would.
kernels::simd::BatchBytes whole_batch(const View3& x) {
  return kernels::simd::BatchBytes(x.N * x.C * x.L * static_cast<int64_t>(element_size(x.dtype)));
}

// Zeros at positions [l, l + length) of sample n, in every channel of @p y (elements of
// @p dtype); runs of unit stride go through the kernels, streamed with @p stream.
void zero_block(const Out3& y, DType dtype, int64_t C, int64_t n, int64_t l, int64_t length,
                bool stream) {
  if (length <= 0) return;
  const auto es = static_cast<int64_t>(element_size(dtype));
  char* base = static_cast<char*>(y.data) + (n * y.sN + l * y.sL) * es;
  if (y.sC == 1 && y.sL == C) {
    kernels::simd::zero_run(base, dtype, length * C, stream);
  } else if (y.sL == 1) {
    for (int64_t c = 0; c < C; ++c)
      kernels::simd::zero_run(base + c * y.sC * es, dtype, length, stream);
  } else {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < length; ++i)
        std::memset(base + (c * y.sC + i * y.sL) * es, 0, static_cast<std::size_t>(es));
  }
}

// Whether the masked kernels take the valid positions of @p part, over views with unit stride
// along L. The reductions take them for a mask with holes (more than two runs per sample on
// average, where a kernel call per run would cost more than reading the padding too); the
// elementwise passes always, since they write every position in one pass where the runs path
// writes the runs, then the padding.
bool masked_kernels(const detail::Partition& part, std::initializer_list<int64_t> strides_l,
                    bool elementwise = false) {
  if (part.valid == nullptr ||
      (!elementwise &&
       part.valid->runs().size() <= 2 * static_cast<std::size_t>(part.valid->batch_size())))
    return false;
  return std::all_of(strides_l.begin(), strides_l.end(), [](int64_t s) { return s == 1; });
}

// The valid positions of an (N, ·, L) view as the masked kernels read them (1 valid, 0 not, in
// their compute type), in the calling thread's workspace.
template <class V>
const void* valid_values(std::vector<V>& buffer, const View3& x, const ValidPositions& valid) {
  buffer.assign(static_cast<std::size_t>(x.N * x.L), V{0});
  for (const ValidPositions::Run& r : valid.runs())
    std::fill_n(buffer.data() + r.n * x.L + r.start, r.length, V{1});
  return buffer.data();
}
const void* valid_values(const View3& x, const ValidPositions& valid) {
  detail::StepWorkspace& ws = detail::thread_workspace();
  if (kernels::simd::masked_valid_dtype(x.dtype) == DType::Float32)
    return valid_values(ws.valid_f32, x, valid);
  return valid_values(ws.valid_f64, x, valid);
}

// Zeros at every position of an output for @p x outside part.valid (nothing without one),
// sample by sample on the threads.
void zero_padding(const Out3& y, const View3& x, const detail::Partition& part) {
  if (part.valid == nullptr) return;
  const bool stream =
      kernels::simd::streams_output(x.N * x.C * x.L * static_cast<int64_t>(element_size(x.dtype)));
  const auto runs = part.valid->runs();
  detail::parallel_blocks(x.N, [&](int64_t n) {
    auto r = std::lower_bound(runs.begin(), runs.end(), n,
                              [](const ValidPositions::Run& run, int64_t m) { return run.n < m; });
    int64_t l = 0;  // the first position not yet written
    for (; r != runs.end() && r->n == n; ++r) {
      zero_block(y, x.dtype, x.C, n, l, r->start - l, stream);
      l = r->start + r->length;
    }
    zero_block(y, x.dtype, x.C, n, l, x.L - l, stream);
    if (stream) kernels::simd::flush_streams();  // each thread orders its own stores
  });
}

// Runs of a mask processed this many at a time: their statistics wait in the calling thread's
// workspace (kRunBatch · C values each) until they are merged in run order.
constexpr int64_t kRunBatch = 64;

// The sub-views of run @p r of x.
View3 run_view(const View3& x, const ValidPositions::Run& r) {
  return sub_view(x, x.dtype, r.n, 1, r.start, r.length);
}
Out3 run_view(const Out3& y, DType dtype, const ValidPositions::Run& r) {
  return sub_view(y, dtype, r.n, 1, r.start, r.length);
}

}  // namespace

void group_stats(double* mean, double* m2, const View3& x, const detail::Partition& part,
                 int64_t g) {
  const auto scope = whole_batch(x);
  std::fill_n(mean, x.C, 0.0);
  std::fill_n(m2, x.C, 0.0);
  if (part.valid == nullptr) {
    for_each_block(part, g, x.N, x.L, [&](int64_t n, int64_t l, int64_t count, int64_t length) {
      channel_stats(mean, m2, sub_view(x, x.dtype, n, count, l, length));
    });
    return;
  }
  if (part.valid->count() == 0) return;
  if (masked_kernels(part, {x.sL}))
    return kernels::simd::masked_channel_stats(mean, m2, x, valid_values(x, *part.valid),
                                               part.valid->count());
  // Each run's statistics on the threads, then Chan's merge of them in run order.
  const auto runs = part.valid->runs();
  const auto size = static_cast<std::size_t>(kRunBatch * x.C);
  detail::StepWorkspace& ws = detail::thread_workspace();
  double* run_mean = detail::sized(ws.block_a, size);
  double* run_m2 = detail::sized(ws.block_b, size);
  int64_t na = 0;
  for (std::size_t r0 = 0; r0 < runs.size(); r0 += kRunBatch) {
    const auto batch = static_cast<int64_t>(std::min<std::size_t>(kRunBatch, runs.size() - r0));
    detail::parallel_blocks(batch, [&](int64_t i) {
      const auto block_scope = whole_batch(x);
      channel_stats(run_mean + i * x.C, run_m2 + i * x.C, run_view(x, runs[r0 + i]));
    });
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t nb = runs[r0 + i].length;
      const double total = static_cast<double>(na + nb);
      kernels::simd::merge_slot(
          mean, m2, run_mean + i * x.C, run_m2 + i * x.C, static_cast<double>(nb) / total,
          static_cast<double>(na) * static_cast<double>(nb) / total, na == 0, x.C);
      na += nb;
    }
  }
}

void group_normalize(const Out3& y, const View3& x, const detail::Partition& part, int64_t g,
                     const double* mean, const double* scale, const double* shift,
                     const kernels::Act& act) {
  const auto scope = whole_batch(x);
  if (part.valid == nullptr) {
    for_each_block(part, g, x.N, x.L, [&](int64_t n, int64_t l, int64_t count, int64_t length) {
      normalize(sub_view(y, x.dtype, n, count, l, length),
                sub_view(x, x.dtype, n, count, l, length), mean, scale, shift, act);
    });
    return;
  }
  if (masked_kernels(part, {x.sL, y.sL}, /*elementwise=*/true) &&
      kernels::simd::masked_normalize(y, x, valid_values(x, *part.valid), mean, scale, shift, act))
    return;
  const auto runs = part.valid->runs();
  detail::parallel_blocks(static_cast<int64_t>(runs.size()), [&](int64_t i) {
    const auto block_scope = whole_batch(x);
    normalize(run_view(y, x.dtype, runs[i]), run_view(x, runs[i]), mean, scale, shift, act);
  });
  zero_padding(y, x, part);
}

void group_backward_sums(double* sum_dy, double* sum_dy_xmu, const View3& dy, const View3& x,
                         const detail::Partition& part, int64_t g, const double* mean,
                         const kernels::Act& act) {
  const auto scope = whole_batch(x);
  std::fill_n(sum_dy, x.C, 0.0);
  std::fill_n(sum_dy_xmu, x.C, 0.0);
  // The gate tests of the activation found once for the group's blocks and runs (else each call
  // finds its own).
  kernels::Act gated = act;
  (void)kernels::simd::with_gate_tests(gated, x.dtype, x.C, mean);
  if (part.valid == nullptr) {
    for_each_block(part, g, x.N, x.L, [&](int64_t n, int64_t l, int64_t count, int64_t length) {
      backward_sums(sum_dy, sum_dy_xmu, sub_view(dy, dy.dtype, n, count, l, length),
                    sub_view(x, x.dtype, n, count, l, length), mean, gated);
    });
    return;
  }
  if (masked_kernels(part, {x.sL, dy.sL}) &&
      kernels::simd::masked_backward_sums(sum_dy, sum_dy_xmu, dy, x, valid_values(x, *part.valid),
                                          mean, gated))
    return;
  // Each run's sums on the threads, then added in run order.
  const auto runs = part.valid->runs();
  const auto size = static_cast<std::size_t>(kRunBatch * x.C);
  detail::StepWorkspace& ws = detail::thread_workspace();
  double* run_dy = detail::sized(ws.block_a, size);
  double* run_dy_xmu = detail::sized(ws.block_b, size);
  for (std::size_t r0 = 0; r0 < runs.size(); r0 += kRunBatch) {
    const auto batch = static_cast<int64_t>(std::min<std::size_t>(kRunBatch, runs.size() - r0));
    detail::parallel_blocks(batch, [&](int64_t i) {
      const auto block_scope = whole_batch(x);
      backward_sums(run_dy + i * x.C, run_dy_xmu + i * x.C, run_view(dy, runs[r0 + i]),
                    run_view(x, runs[r0 + i]), mean, gated);
    });
    for (int64_t i = 0; i < batch; ++i)
      kernels::simd::add_slot(sum_dy, sum_dy_xmu, run_dy + i * x.C, run_dy_xmu + i * x.C,
                              r0 == 0 && i == 0, x.C);
  }
}

void group_backward_input(const Out3& dx, const View3& dy, const View3& x,
                          const detail::Partition& part, int64_t g, const double* mean,
                          const double* a, const double* b, const double* k,
                          const kernels::Act& act) {
  const auto scope = whole_batch(x);
  if (part.valid == nullptr) {
    for_each_block(part, g, x.N, x.L, [&](int64_t n, int64_t l, int64_t count, int64_t length) {
      backward_input(sub_view(dx, x.dtype, n, count, l, length),
                     sub_view(dy, dy.dtype, n, count, l, length),
                     sub_view(x, x.dtype, n, count, l, length), mean, a, b, k, act);
    });
    return;
  }
  if (masked_kernels(part, {x.sL, dy.sL, dx.sL}, /*elementwise=*/true) &&
      kernels::simd::masked_backward_input(dx, dy, x, valid_values(x, *part.valid), mean, a, b, k,
                                           act))
    return;
  const auto runs = part.valid->runs();
  detail::parallel_blocks(static_cast<int64_t>(runs.size()), [&](int64_t i) {
    const auto block_scope = whole_batch(x);
    backward_input(run_view(dx, x.dtype, runs[i]), run_view(dy, runs[i]), run_view(x, runs[i]),
                   mean, a, b, k, act);
  });
  zero_padding(dx, x, part);
}

}  // namespace bn1d::route
