// SPDX-License-Identifier: MIT
/// @file ghost_batch_norm.hpp
/// @brief GhostBatchNorm1d: batch normalization over virtual batches (ghost batch norm, as in
/// TabNet), exactly the loop `for chunk in x.chunk(k): y.append(bn(chunk))`, in one call.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "bn1d/batch_norm.hpp"
#include "bn1d/module.hpp"
#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"

namespace bn1d {

/// How a GhostBatchNorm1d splits a batch of N samples into virtual batches.
enum class GhostSplit {
  /// torch.chunk(x, ceil(N / virtual_batch_size)): chunks of ceil(N / k) samples, the last one
  /// smaller (there may be fewer than k chunks, as torch.chunk gives). TabNet's split.
  Chunk,
  /// Chunks of exactly virtual_batch_size samples, the remainder last; a remainder that would
  /// hold a single value per channel (one sample of an (N, C) or (N, C, 1) input) joins the
  /// chunk before it.
  Fixed,
};

/// "chunk" or "fixed".
const char* ghost_split_name(GhostSplit split) noexcept;

/// The options of a BatchNorm1d with GhostBatchNorm1d's default momentum, 0.01 (TabNet's
/// GBN default is 0.01; its TabNet model passes 0.02).
BatchNorm1dOptions ghost_options(int64_t num_features);

/// Ghost (virtual-batch) batch normalization. In training (and whenever batch statistics are
/// used, i.e. without track_running_stats), the batch is split along N into chunks (split());
/// each chunk is normalized with its own batch statistics and, in training, updates the running
/// statistics in chunk order, num_batches_tracked growing by the number of chunks. The result —
/// outputs, running statistics, gradients — is that of the loop of one torch.nn.BatchNorm1d call
/// per chunk, computed in one call: every chunk's statistics in one read of the input, one pass
/// to normalize. Eval mode with running statistics normalizes the whole batch with them, as the
/// loop does. A chunk with a single value per channel is the Error torch raises
/// ("Expected more than 1 value per channel when training, ..."), raised before anything
/// changes (torch's loop would have updated the running statistics with the chunks before it).
///
/// Parameters, buffers, state dict and files are BatchNorm1d's (module()). Thread safety as
/// BatchNorm1d.
class GhostBatchNorm1d {
 public:
  /// Gradients returned by backward(): input, weight, bias (undefined without affine).
  using Gradients = BatchNormGradients;

  /// GhostBatchNorm1d with ghost_options(num_features) (momentum 0.01).
  explicit GhostBatchNorm1d(int64_t num_features, int64_t virtual_batch_size = 128,
                            GhostSplit split = GhostSplit::Chunk);
  /// Throws Error for invalid @p options (as BatchNorm1d) or virtual_batch_size < 1.
  GhostBatchNorm1d(const BatchNorm1dOptions& options, int64_t virtual_batch_size = 128,
                   GhostSplit split = GhostSplit::Chunk);

  /// The chunk boundaries for a batch of @p N samples: {0, n_1, ..., N} (chunk i holds samples
  /// [b[i], b[i + 1])); {0, 0} (one empty chunk) for N = 0. @p L is the input's length (1 for an
  /// (N, C) input), which GhostSplit::Fixed needs.
  std::vector<int64_t> chunk_bounds(int64_t N, int64_t L = 1) const;

  /// Normalizes @p input ((N, C) or (N, C, L), BatchNorm1d's dtypes, any strides) chunk by
  /// chunk; returns a new contiguous tensor of its shape. Saves what backward() needs.
  Tensor forward(const Tensor& input);
  /// Same as forward().
  Tensor operator()(const Tensor& input) { return forward(input); }
  /// forward() into a caller-owned buffer (BatchNorm1d's reuse rule).
  void forward(const Tensor& input, Tensor& output);
  /// Gradients of the most recent forward(): each chunk's input gradient through its own
  /// statistics; weight and bias gradients summed over the chunks.
  Gradients backward(const Tensor& grad_output);
  /// backward() into caller-owned buffers (BatchNorm1d's reuse rule).
  void backward(const Tensor& grad_output, Gradients& grads);
  /// Inference without side effects: the running statistics (per-chunk batch statistics without
  /// track_running_stats), whatever the training flag.
  Tensor infer(const Tensor& input) const;
  /// infer() into a caller-owned buffer.
  void infer(const Tensor& input, Tensor& output) const;

  /// Sets training (true) or evaluation (false) mode; returns *this.
  GhostBatchNorm1d& train(bool on = true) noexcept {
    module_.train(on);
    return *this;
  }
  /// Sets evaluation mode; returns *this.
  GhostBatchNorm1d& eval() noexcept { return train(false); }
  /// True in training mode (the initial mode).
  bool is_training() const noexcept { return module_.is_training(); }
  /// Running statistics to mean 0, variance 1, num_batches_tracked 0; weight 1 and bias 0.
  void reset_parameters() { module_.reset_parameters(); }
  /// Running statistics to mean 0, variance 1, num_batches_tracked 0.
  void reset_running_stats() { module_.reset_running_stats(); }
  /// γ, shape {C}; undefined without affine.
  Tensor& weight() noexcept { return module_.weight(); }
  const Tensor& weight() const noexcept { return module_.weight(); }
  /// β, shape {C}; undefined without affine.
  Tensor& bias() noexcept { return module_.bias(); }
  const Tensor& bias() const noexcept { return module_.bias(); }
  /// Running mean, shape {C}; undefined without track_running_stats.
  Tensor& running_mean() noexcept { return module_.running_mean(); }
  const Tensor& running_mean() const noexcept { return module_.running_mean(); }
  /// Running unbiased variance, shape {C}; undefined without track_running_stats.
  Tensor& running_var() noexcept { return module_.running_var(); }
  const Tensor& running_var() const noexcept { return module_.running_var(); }
  /// Number of chunks seen in training while tracking.
  int64_t num_batches_tracked() const noexcept { return module_.num_batches_tracked(); }
  /// The BatchNorm1d options.
  const BatchNorm1dOptions& options() const noexcept { return module_.options(); }
  /// The number of samples of a virtual batch.
  int64_t virtual_batch_size() const noexcept { return virtual_batch_size_; }
  /// How batches are split.
  GhostSplit split() const noexcept { return split_; }
  /// The BatchNorm1d holding the parameters and buffers.
  const BatchNorm1d& module() const noexcept { return module_; }

  /// BatchNorm1d's state dict (PyTorch's keys).
  StateDict state_dict() const { return module_.state_dict(); }
  /// As BatchNorm1d::load_state_dict.
  void load_state_dict(const StateDict& state, bool strict = true) {
    module_.load_state_dict(state, strict);
  }
  /// Saves state_dict() to @p path as safetensors.
  void save(const std::string& path) const { module_.save(path); }
  /// As BatchNorm1d::load.
  void load(const std::string& path, const std::string& prefix = "") { module_.load(path, prefix); }

 private:
  BatchNorm1d module_;  // options, parameters, buffers, the training step
  int64_t virtual_batch_size_;
  GhostSplit split_;
};

/// Prints `GhostBatchNorm1d(64, virtual_batch_size=128, split=chunk, eps=1e-05, momentum=0.01,
/// affine=true, track_running_stats=true)`, with BatchNorm1d's activation text when one is set.
std::ostream& operator<<(std::ostream& os, const GhostBatchNorm1d& module);

}  // namespace bn1d
