// SPDX-License-Identifier: MIT
/// @file ghost_loop.hpp
/// @brief The peer of bn1d_variants_bench's ghost rows: libtorch's ghost batch norm as TabNet
/// writes it, `torch.cat([bn(c) for c in x.chunk(k)])`, with k = ceil(N / virtual_batch_size).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace bench {

/// One ghost batch norm problem: a float32 (N, C) input and output gradient, row-major, shared
/// with bn1d; the affine weight and bias are affine_weight(c) and affine_bias(c) (runner.hpp).
struct GhostProblem {
  int64_t n = 0, c = 0;
  int64_t virtual_batch_size = 128;
  double momentum = 0.01, eps = 1e-5;
  float* x = nullptr;
  float* dy = nullptr;
};

/// A ghost batch norm implementation bound to one GhostProblem.
class GhostRunner {
 public:
  virtual ~GhostRunner() = default;
  /// Training forward: every chunk with its own statistics, running statistics updated in
  /// chunk order.
  virtual void forward_train() = 0;
  /// Evaluation forward (running statistics).
  virtual void forward_eval() = 0;
  /// Gradients of input, weight and bias of the last forward_train() for GhostProblem::dy.
  virtual void backward() = 0;
  /// The (N, C) row-major output of the last forward call.
  virtual const float* output() const = 0;
};

#if BN1D_HAVE_TORCH
/// libtorch's loop: x.chunk(k), at::native_batch_norm per chunk, at::cat of the outputs; the
/// backward is at::native_batch_norm_backward per chunk, at::cat of the input gradients and the
/// sum of the chunks' weight and bias gradients. Outputs are allocated per call, as in the loop.
std::unique_ptr<GhostRunner> make_torch_ghost_loop(const GhostProblem& p);
#endif

}  // namespace bench
