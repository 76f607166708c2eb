// SPDX-License-Identifier: MIT
// GhostBatchNorm1d: BatchNorm1d's step over chunks of the batch (partition.hpp), each with its
// own statistics, the running statistics updated chunk after chunk.
#include "bn1d/ghost_batch_norm.hpp"

#include <ostream>

#include "format.hpp"
#include "options_repr.hpp"
#include "partition.hpp"
#include "validate.hpp"

namespace bn1d {

const char* ghost_split_name(GhostSplit split) noexcept {
  return split == GhostSplit::Chunk ? "chunk" : "fixed";
}

BatchNorm1dOptions ghost_options(int64_t num_features) {
  return BatchNorm1dOptions(num_features).momentum(0.01);
}

GhostBatchNorm1d::GhostBatchNorm1d(int64_t num_features, int64_t virtual_batch_size,
                                   GhostSplit split)
    : GhostBatchNorm1d(ghost_options(num_features), virtual_batch_size, split) {}

GhostBatchNorm1d::GhostBatchNorm1d(const BatchNorm1dOptions& options, int64_t virtual_batch_size,
                                   GhostSplit split)
    : module_(options), virtual_batch_size_(virtual_batch_size), split_(split) {
  if (virtual_batch_size < 1) {
    throw Error("virtual_batch_size: expected a positive number of samples, got " +
                std::to_string(virtual_batch_size));
  }
  if (split != GhostSplit::Chunk && split != GhostSplit::Fixed) {
    throw Error("split: expected GhostSplit::Chunk or GhostSplit::Fixed, got " +
                std::to_string(static_cast<int>(split)));
  }
}

std::vector<int64_t> GhostBatchNorm1d::chunk_bounds(int64_t N, int64_t L) const {
  if (N <= 0) return {0, 0};
  const int64_t vbs = virtual_batch_size_;
  // torch.chunk(x, k) with k = ceil(N / vbs): chunks of ceil(N / k) samples, the last smaller.
  const int64_t chunks = N / vbs + (N % vbs != 0);
  const int64_t step = split_ == GhostSplit::Chunk ? N / chunks + (N % chunks != 0) : vbs;
  std::vector<int64_t> bounds{0};
  for (int64_t n = 0; N - n > step;) bounds.push_back(n += step);  // no overflow past N
  bounds.push_back(N);
  // Fixed: a last chunk of one value per channel (one sample with L == 1) joins the one before.
  if (split_ == GhostSplit::Fixed && bounds.size() > 2 && L == 1 &&
      bounds[bounds.size() - 1] - bounds[bounds.size() - 2] == 1)
    bounds.erase(bounds.end() - 2);
  return bounds;
}

// The chunks of @p input's samples (an invalid input is refused by the step, with its message).
static std::vector<int64_t> input_chunks(const GhostBatchNorm1d& m, const Tensor& input) {
  const int64_t N = input.dim() >= 1 ? input.size(0) : 0;
  const int64_t L = input.dim() == 3 ? input.size(2) : 1;
  return m.chunk_bounds(N, L);
}

void GhostBatchNorm1d::forward(const Tensor& input, Tensor& output) {
  if (!module_.is_training() && module_.options().track_running_stats())
    return module_.forward(input, output);  // running statistics: the whole batch at once
  const std::vector<int64_t> bounds = input_chunks(*this, input);
  module_.forward(input, output, detail::Partition{nullptr, bounds});
}

Tensor GhostBatchNorm1d::forward(const Tensor& input) {
  Tensor output;
  forward(input, output);
  return output;
}

void GhostBatchNorm1d::backward(const Tensor& grad_output, Gradients& grads) {
  module_.backward(grad_output, grads);
}

GhostBatchNorm1d::Gradients GhostBatchNorm1d::backward(const Tensor& grad_output) {
  return module_.backward(grad_output);
}

void GhostBatchNorm1d::infer(const Tensor& input, Tensor& output) const {
  if (module_.options().track_running_stats()) return module_.infer(input, output);
  const std::vector<int64_t> bounds = input_chunks(*this, input);
  module_.infer(input, output, detail::Partition{nullptr, bounds});
}

Tensor GhostBatchNorm1d::infer(const Tensor& input) const {
  Tensor output;
  infer(input, output);
  return output;
}

std::ostream& operator<<(std::ostream& os, const GhostBatchNorm1d& module) {
  const BatchNorm1dOptions& o = module.options();
  os << "GhostBatchNorm1d(" << o.num_features()
     << ", virtual_batch_size=" << module.virtual_batch_size()
     << ", split=" << ghost_split_name(module.split()) << ", eps=" << python_float_repr(o.eps())
     << ", momentum=" << (o.momentum() ? python_float_repr(*o.momentum()) : "None")
     << ", affine=" << (o.affine() ? "true" : "false")
     << ", track_running_stats=" << (o.track_running_stats() ? "true" : "false");
  return detail::write_activation(os, o) << ")";
}

}  // namespace bn1d
