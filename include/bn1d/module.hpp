// SPDX-License-Identifier: MIT
/// @file module.hpp
/// @brief BatchNorm1d: the stateful module of torch.nn.BatchNorm1d / R torch nn_batch_norm1d.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bn1d/batch_norm.hpp"
#include "bn1d/combine.hpp"
#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"
#include "bn1d/valid_positions.hpp"

namespace bn1d {

namespace detail {
struct Partition;  // how the step splits a batch (src/partition.hpp)
}  // namespace detail

/// Options of a BatchNorm1d, with PyTorch's defaults. Setters chain:
/// `BatchNorm1dOptions(64).eps(1e-3).momentum(std::nullopt)`.
class BatchNorm1dOptions {
 public:
  /// @p num_features: C of an (N, C) or (N, C, L) input. Validated when the module is built.
  explicit BatchNorm1dOptions(int64_t num_features) : num_features_(num_features) {}

  /// Number of channels C.
  int64_t num_features() const noexcept { return num_features_; }
  /// Added to the variance before the square root (default 1e-5; must be finite and ≥ 0).
  BatchNorm1dOptions& eps(double value) {
    eps_ = value;
    return *this;
  }
  double eps() const noexcept { return eps_; }
  /// Weight of the newest batch in the running statistics: running = (1 − m)·running + m·batch
  /// (default 0.1, must be in [0, 1]). std::nullopt gives a cumulative moving average,
  /// m = 1 / num_batches_tracked.
  BatchNorm1dOptions& momentum(std::optional<double> value) {
    momentum_ = value;
    return *this;
  }
  std::optional<double> momentum() const noexcept { return momentum_; }
  /// Learnable per-channel weight (γ, init 1) and bias (β, init 0) (default true).
  BatchNorm1dOptions& affine(bool value) {
    affine_ = value;
    return *this;
  }
  bool affine() const noexcept { return affine_; }
  /// Keep running_mean/running_var/num_batches_tracked and use them in eval mode (default true).
  /// When false, batch statistics are used in training and eval mode alike.
  BatchNorm1dOptions& track_running_stats(bool value) {
    track_ = value;
    return *this;
  }
  bool track_running_stats() const noexcept { return track_; }
  /// dtype of the parameters and buffers (default Float32): Float32, Float64, BFloat16 or
  /// Float16. The module takes inputs of its own dtype and, when it is Float32 or Float64, also
  /// BFloat16 and Float16 inputs (mixed precision, as torch's `BatchNorm1d(C)(x.bfloat16())`);
  /// outputs and grad_input have the input's dtype, everything else the module's.
  BatchNorm1dOptions& dtype(DType value) {
    dtype_ = value;
    return *this;
  }
  DType dtype() const noexcept { return dtype_; }
  /// The activation fused into the output (default Activation::None): forward writes
  /// act(bn(x)) in the normalizing pass and backward gates grad_output by its derivative,
  /// recomputed from the input (bn1d/activation.hpp). As torch's `act(bn(x))`, outputs and
  /// gradients alike.
  BatchNorm1dOptions& activation(Activation value) {
    activation_ = value;
    return *this;
  }
  Activation activation() const noexcept { return activation_; }
  /// LeakyReLU's slope for bn(x) ≤ 0 (default 0.01, must be finite; unused by other activations).
  BatchNorm1dOptions& negative_slope(double value) {
    negative_slope_ = value;
    return *this;
  }
  double negative_slope() const noexcept { return negative_slope_; }
  /// activation() and negative_slope() together, as the functional API takes them.
  FusedActivation fused_activation() const noexcept { return {activation_, negative_slope_}; }

 private:
  int64_t num_features_;
  double eps_ = 1e-5;
  std::optional<double> momentum_ = 0.1;
  bool affine_ = true;
  bool track_ = true;
  DType dtype_ = DType::Float32;
  Activation activation_ = Activation::None;
  double negative_slope_ = 0.01;
};

/// Batch normalization over (N, C) or (N, C, L) inputs, exactly as torch.nn.BatchNorm1d:
///
///   y = (x − E[x]) / sqrt(Var[x] + eps) · weight + bias,   per channel over N·L values.
///
/// Training mode normalizes with the batch mean and **biased** variance and, when tracking,
/// updates running_mean/running_var with momentum using the **unbiased** variance
/// (n / (n − 1) · biased, n = N·L) and increments num_batches_tracked. Eval mode normalizes with
/// the running statistics; without track_running_stats it uses batch statistics in both modes.
/// With an activation option, forward() and infer() write act(y) and backward() returns the
/// gradients of act(y), as torch's `relu(bn(x))` or `leaky_relu(bn(x), negative_slope)`.
///
/// Differences from PyTorch (deliberate): a call that throws changes nothing (PyTorch increments
/// num_batches_tracked before validating); an empty batch (N·L·C == 0) returns an empty output and
/// changes no state.
///
/// Thread safety: distinct modules may be used concurrently. forward() and backward() mutate
/// the module (saved input and statistics, running statistics) even in eval mode, so they must not
/// run on one module from several threads at once; infer() and the const accessors may.
class BatchNorm1d {
 public:
  /// Gradients returned by backward(): input, weight, bias (undefined without affine).
  using Gradients = BatchNormGradients;

  /// BatchNorm1d(num_features) with default options.
  explicit BatchNorm1d(int64_t num_features);
  /// Throws Error for num_features < 1, eps negative or non-finite, momentum outside [0, 1] or
  /// non-finite, a dtype that is not floating (Int64), an activation that is not one of
  /// Activation's values, or a non-finite negative_slope.
  explicit BatchNorm1d(const BatchNorm1dOptions& options);
  /// Deep copy: the copy's parameters and buffers are independent of the original's.
  BatchNorm1d(const BatchNorm1d& other);
  /// Deep copy assignment.
  BatchNorm1d& operator=(const BatchNorm1d& other);
  /// Moves the module. The moved-from module is empty: every call that computes or reads its
  /// state — forward(), infer(), backward(), state_dict(), save(), load(), load_state_dict(),
  /// reset_parameters(), reset_running_stats(), and copying it — throws Error "BatchNorm1d: use
  /// of a moved-from module"; its accessors return undefined tensors and num_batches_tracked() 0,
  /// options() and the training flag stay readable. Assigning a module to it makes it usable again.
  BatchNorm1d(BatchNorm1d&&) noexcept = default;
  BatchNorm1d& operator=(BatchNorm1d&&) noexcept = default;
  ~BatchNorm1d() = default;

  /// Normalizes @p input ((N, C) or (N, C, L), the module's dtype, any strides) and returns a
  /// new contiguous tensor of the same shape. Saves what backward() needs (a reference to the
  /// input: its memory must stay valid until backward()).
  Tensor forward(const Tensor& input);
  /// Same as forward().
  Tensor operator()(const Tensor& input) { return forward(input); }
  /// forward() into a caller-owned buffer: @p output is reused (no allocation in steady state)
  /// when it has the input's sizes and dtype, overlaps neither the input nor the module's weight,
  /// bias and running statistics (an overlapping one is replaced, never written), and is
  /// contiguous or has exactly the input's strides with the input dense — e.g. a channels-last
  /// output for a channels-last input, the fastest way to normalize such data. Otherwise it is
  /// replaced by a new contiguous tensor. A call that throws writes no output.
  void forward(const Tensor& input, Tensor& output);
  /// forward() whose batch statistics are combined by @p combiner (e.g. across the ranks of a
  /// distributed batch, as SyncBatchNorm1d does) before normalizing: every participant must make
  /// the same calls. With running statistics (eval mode) nothing is combined: the step calls
  /// combiner.agree() instead, so that every participant still makes one call.
  void forward(const Tensor& input, Tensor& output, StatsCombiner& combiner);

  /// Masked forward of an (N, C, L) @p input whose valid positions are @p valid (lengths or a
  /// mask: valid_positions.hpp): statistics over the valid values only — the result of
  /// torch.nn.BatchNorm1d on the packed valid values, as a (valid.count(), C) batch — and 0 at
  /// every padding position. In training, running_var takes the unbiased variance over the
  /// valid count and num_batches_tracked grows by 1; a batch with no valid value is an Error (no
  /// statistics), as is one with a single valid value per channel. Eval mode with running
  /// statistics normalizes the valid positions. backward() then uses the same positions (a copy
  /// is kept) and gives a 0 input gradient at the padding.
  Tensor forward(const Tensor& input, const ValidPositions& valid);
  /// Masked forward() into a caller-owned buffer (forward()'s reuse rule).
  void forward(const Tensor& input, Tensor& output, const ValidPositions& valid);
  /// Masked forward() whose statistics are combined by @p combiner (SyncBatchNorm1d: each
  /// participant's valid count may differ).
  void forward(const Tensor& input, Tensor& output, const ValidPositions& valid,
               StatsCombiner& combiner);
  /// Inference without side effects: normalizes @p input with the running statistics (with
  /// batch statistics when the module does not track them), whatever the training flag, and
  /// changes nothing — no running-statistics update, nothing saved for backward(). Safe to call
  /// from many threads at once on one module while no thread modifies it.
  Tensor infer(const Tensor& input) const;
  /// infer() into a caller-owned buffer, under forward()'s reuse rule.
  void infer(const Tensor& input, Tensor& output) const;

  /// Masked infer(): as infer(), over the valid positions of @p input (0 at the padding).
  Tensor infer(const Tensor& input, const ValidPositions& valid) const;
  /// Masked infer() into a caller-owned buffer.
  void infer(const Tensor& input, Tensor& output, const ValidPositions& valid) const;
  /// Gradients of the most recent forward() with respect to its input, weight and bias, for
  /// @p grad_output of the output's shape and dtype. Throws Error before any forward().
  Gradients backward(const Tensor& grad_output);
  /// backward() into caller-owned buffers: each tensor of @p grads is reused when it already has
  /// the right sizes and dtype and overlaps neither grad_output, the saved input, the module's
  /// parameters and buffers nor another gradient (grads.input: also under the layout rule of
  /// forward()'s output), otherwise replaced before anything is written. A call that throws
  /// writes none of them.
  void backward(const Tensor& grad_output, Gradients& grads);
  /// backward() whose gradient sums are combined by @p combiner when the forward used batch
  /// statistics (otherwise the step calls combiner.agree()). grads.input is the gradient for the
  /// combined batch; grads.weight and grads.bias are this participant's own contributions (a
  /// data-parallel optimizer sums them).
  void backward(const Tensor& grad_output, Gradients& grads, StatsCombiner& combiner);

  /// Sets training (true) or evaluation (false) mode; returns *this.
  BatchNorm1d& train(bool on = true) noexcept {
    training_ = on;
    return *this;
  }
  /// Sets evaluation mode; returns *this.
  BatchNorm1d& eval() noexcept { return train(false); }
  /// True in training mode (the initial mode).
  bool is_training() const noexcept { return training_; }

  /// Running statistics to mean 0, variance 1, num_batches_tracked 0; weight 1 and bias 0.
  void reset_parameters();
  /// Running statistics to mean 0, variance 1, num_batches_tracked 0.
  void reset_running_stats();

  /// γ, shape {C}; undefined without affine. Its values may be changed in place.
  Tensor& weight() noexcept { return weight_; }
  const Tensor& weight() const noexcept { return weight_; }
  /// β, shape {C}; undefined without affine.
  Tensor& bias() noexcept { return bias_; }
  const Tensor& bias() const noexcept { return bias_; }
  /// Running mean, shape {C}; undefined without track_running_stats.
  Tensor& running_mean() noexcept { return running_mean_; }
  const Tensor& running_mean() const noexcept { return running_mean_; }
  /// Running **unbiased** variance, shape {C}; undefined without track_running_stats.
  Tensor& running_var() noexcept { return running_var_; }
  const Tensor& running_var() const noexcept { return running_var_; }
  /// Number of training forwards seen while tracking (0 without track_running_stats).
  int64_t num_batches_tracked() const noexcept {
    return moved_from_.value ? 0 : num_batches_tracked_;
  }
  /// The options the module was built with.
  const BatchNorm1dOptions& options() const noexcept { return options_; }

  /// weight, bias, running_mean, running_var (clones) and num_batches_tracked (int64 scalar),
  /// in PyTorch's order, only those that exist.
  StateDict state_dict() const;
  /// Copies matching entries of @p state into the module. With @p strict, missing and unexpected
  /// keys are errors (a missing num_batches_tracked is allowed and loads as 0). Wrong shapes or
  /// dtypes are always errors naming the key. On any error the module is unchanged.
  void load_state_dict(const StateDict& state, bool strict = true);
  /// Saves state_dict() to @p path as safetensors.
  void save(const std::string& path) const;
  /// Loads the entries `prefix + key` of a safetensors file (one layer of a whole-model file),
  /// strictly: missing or unexpected keys under @p prefix are errors. Module unchanged on error.
  void load(const std::string& path, const std::string& prefix = "");

 private:
  struct Step;                    // the training step (training_step.cpp)
  friend class GhostBatchNorm1d;  // runs the step over its chunks
  // The step over a partition of the batch: its valid positions or a GhostBatchNorm1d's chunks.
  void forward(const Tensor& input, Tensor& output, const detail::Partition& part);
  void forward(const Tensor& input, Tensor& output, const detail::Partition& part,
               StatsCombiner& combiner);
  void infer(const Tensor& input, Tensor& output, const detail::Partition& part) const;

  // True in a moved-from module: moving a module sets its source's flag.
  struct MovedFrom {
    bool value = false;
    MovedFrom() = default;
    MovedFrom(const MovedFrom&) = default;
    MovedFrom& operator=(const MovedFrom&) = default;
    MovedFrom(MovedFrom&& other) noexcept : value(std::exchange(other.value, true)) {}
    MovedFrom& operator=(MovedFrom&& other) noexcept {
      if (this != &other) value = std::exchange(other.value, true);
      return *this;
    }
    ~MovedFrom() = default;
  };
  // Throws Error when this module was moved from.
  void check_not_moved_from() const;

  BatchNorm1dOptions options_;
  bool training_ = true;
  Tensor weight_, bias_, running_mean_, running_var_;
  int64_t num_batches_tracked_ = 0;

  // Saved by forward() for backward(), and reused buffers, one per group of the batch (one, or
  // a GhostBatchNorm1d's chunks).
  std::vector<BatchStats> stats_ = std::vector<BatchStats>(1);    // this participant's
  std::vector<GradStats> grad_sums_ = std::vector<GradStats>(1);  // statistics, gradient sums
  Tensor saved_input_;
  std::vector<Normalization> saved_norm_;
  std::vector<Normalization> next_norm_;  // a forward computes here, swapped in at its commit
  bool saved_batch_statistics_ = false;
  // The forward's partition of the batch (valid positions, chunk bounds), for backward().
  ValidPositions saved_valid_, next_valid_;
  bool saved_masked_ = false, next_masked_ = false;
  std::vector<int64_t> saved_bounds_, next_bounds_;
  // Eval mode: the running statistics' bytes saved_norm_ was computed from, while it holds that
  // normalization. An eval forward whose running statistics still have those bytes (they may be
  // changed in place through a view) reuses it instead of recomputing invstd.
  Tensor norm_running_mean_, norm_running_var_;
  bool norm_from_running_ = false;
  MovedFrom moved_from_;
};

/// Prints `BatchNorm1d(100, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)`
/// (`momentum=None` for a cumulative average); numbers as Python prints them. A fused activation
/// adds `, activation=relu` or `, activation=leaky_relu, negative_slope=0.01` before the `)`.
std::ostream& operator<<(std::ostream& os, const BatchNorm1d& module);

}  // namespace bn1d
