// SPDX-License-Identifier: MIT
// SyncBatchNorm1d: BatchNorm1d's training step with an MpiStatsCombiner. Uses bn1d's public API
// only.
#include "bn1d/dist/sync_batch_norm.hpp"

#include <ostream>

namespace bn1d {

SyncBatchNorm1d::SyncBatchNorm1d(int64_t num_features, MPI_Comm comm)
    : SyncBatchNorm1d(BatchNorm1dOptions(num_features), comm) {}

SyncBatchNorm1d::SyncBatchNorm1d(const BatchNorm1dOptions& options, MPI_Comm comm)
    : module_(options), combiner_(comm) {}

Tensor SyncBatchNorm1d::forward(const Tensor& input) {
  Tensor output;
  forward(input, output);
  return output;
}

void SyncBatchNorm1d::forward(const Tensor& input, Tensor& output) {
  module_.forward(input, output, combiner_);
}

Tensor SyncBatchNorm1d::forward(const Tensor& input, const ValidPositions& valid) {
  Tensor output;
  forward(input, output, valid);
  return output;
}

void SyncBatchNorm1d::forward(const Tensor& input, Tensor& output, const ValidPositions& valid) {
  module_.forward(input, output, valid, combiner_);
}

SyncBatchNorm1d::Gradients SyncBatchNorm1d::backward(const Tensor& grad_output) {
  Gradients grads;
  backward(grad_output, grads);
  return grads;
}

void SyncBatchNorm1d::backward(const Tensor& grad_output, Gradients& grads) {
  module_.backward(grad_output, grads, combiner_);
}

std::ostream& operator<<(std::ostream& os, const SyncBatchNorm1d& module) {
  return os << "Sync" << module.module();  // "SyncBatchNorm1d(" + BatchNorm1d's options + ")"
}

}  // namespace bn1d
