// SPDX-License-Identifier: MIT
/// @file sync_batch_norm.hpp
/// @brief SyncBatchNorm1d: BatchNorm1d whose batch statistics span all ranks of an MPI
/// communicator (torch.nn.SyncBatchNorm for (N, C) and (N, C, L) inputs).
///
/// Part of the optional library bn1d::dist (built when CMake finds MPI).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>

#include "bn1d/batch_norm.hpp"
#include "bn1d/dist/mpi_combiner.hpp"
#include "bn1d/module.hpp"
#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"

namespace bn1d {

/// Batch normalization whose batch statistics are those of the **global** batch: the
/// concatenation along N of the inputs of every rank of a communicator. Outputs, running
/// statistics and input gradients equal those of a single-process BatchNorm1d on the global
/// batch (up to rounding: float64 within 1e-12, float32 within 8 half-ulps).
///
/// Implementation: a BatchNorm1d (module()) whose training step combines its statistics with an
/// MpiStatsCombiner (mpi_combiner.hpp). Every forward() and backward() on a communicator of more
/// than one rank first makes one MPI_Allgather of a **fixed-size header** (the call, forward or
/// backward; num_features, dtype, mode, affine, track_running_stats, momentum, eps; this rank's
/// status and count), which every rank checks identically, then, where statistics are
/// synchronized, one MPI_Allgather of the per-channel records:
/// - forward (batch statistics): every rank computes its local (count, mean, M2); the records
///   [mean[C], M2[C]] are merged in rank order (deterministic) with the headers' counts; every
///   rank normalizes with the global statistics and applies the identical running-statistics
///   update (unbiased variance with the global count), so the running statistics stay bitwise
///   identical on all ranks.
/// - backward (after a forward with batch statistics): the records [Σdy[C], Σdy·(x − mean)[C]]
///   are summed in rank order; the input gradient uses the global sums. The weight and bias
///   gradients are those of the **local** batch: the data-parallel optimizer sums them across
///   ranks (as DistributedDataParallel's all-reduce does), which gives the gradient of the
///   global batch.
/// - Eval mode with running statistics, and the backward of such a forward, compute locally but
///   still make the header collective (no per-channel exchange), so that a rank in eval mode
///   while another trains, or any error on one rank, is raised on every rank instead of leaving
///   the others waiting. To run inference on one rank alone, use module().infer(), which makes
///   no collective. Without track_running_stats, eval mode normalizes with synchronized batch
///   statistics. A world of size 1 makes no collective.
///
/// Errors never hang, as long as every rank makes the call: every rank validates its arguments
/// locally, puts the outcome in its header and takes part in the header collective anyway. Every
/// rank then throws bn1d::Error, in this order of precedence, when
/// - some rank used a moved-from module: "SyncBatchNorm1d: use of a moved-from module ..." on
///   that rank, "SyncBatchNorm1d: rank R failed: it called a moved-from module" on the others;
/// - the ranks disagree: "SyncBatchNorm1d: ranks disagree on <what> (rank 0: <value>, rank R:
///   <value>)", <what> being the call (forward or backward), num_features, the dtype, affine,
///   track_running_stats, momentum, eps, the mode (training, eval with running statistics, eval
///   with batch statistics) or the backward (synchronized or local, after a forward with batch or
///   running statistics);
/// - some rank failed: the failing rank with its own message (the same text as BatchNorm1d), the
///   others with "SyncBatchNorm1d: rank R failed: <reason>".
/// The training-size check uses the global count: a rank may hold a single value (or no value)
/// per channel as long as the global batch has more than one. A call that throws changes
/// nothing, on any rank (only an out-of-memory error after the exchange is local). MPI failures
/// (MPI_ERRORS_RETURN is set on the module's communicator) become bn1d::Error.
///
/// Preconditions MPI cannot detect (breaking them hangs or crashes, as with any MPI program):
/// - Collective calls: construction (MPI_Comm_dup), destruction (MPI_Comm_free, when the last
///   holder of the duplicate goes), and every forward()/backward() must be made by **all** ranks
///   of the communicator, on corresponding modules (the ones constructed in the same order), in
///   the same order relative to each other and to the program's other collectives on the same
///   communicators. A rank that never makes the call, or makes it on another module, leaves the
///   others waiting: no timeout is applied.
/// - A moved-from module must not be used. If it is, its call still joins the header collective
///   of the module it was moved to, so every rank throws as long as the other ranks call that
///   module; if they call another one, they wait.
/// - MPI must be initialized with a thread level fit for your use, and one module's calls must
///   not run concurrently (as BatchNorm1d).
///
/// The class is move-only (it owns a duplicate of the communicator). Thread safety as
/// BatchNorm1d.
class SyncBatchNorm1d {
 public:
  using Gradients = BatchNormGradients;

  /// SyncBatchNorm1d(num_features) with default options over @p comm (collective on @p comm).
  /// Throws Error if MPI is not initialized, for invalid options (as BatchNorm1d; checked before
  /// the collective duplication, so invalid options must be invalid on every rank), or when
  /// duplicating the communicator fails.
  explicit SyncBatchNorm1d(int64_t num_features, MPI_Comm comm = MPI_COMM_WORLD);
  /// As above with @p options.
  explicit SyncBatchNorm1d(const BatchNorm1dOptions& options, MPI_Comm comm = MPI_COMM_WORLD);
  SyncBatchNorm1d(const SyncBatchNorm1d&) = delete;
  SyncBatchNorm1d& operator=(const SyncBatchNorm1d&) = delete;
  /// Takes over @p other's module and communicator.
  SyncBatchNorm1d(SyncBatchNorm1d&& other) noexcept = default;
  /// Frees this module's communicator, then takes over @p other's module and communicator.
  SyncBatchNorm1d& operator=(SyncBatchNorm1d&& other) noexcept = default;
  /// Frees the communicator duplicate (skipped when MPI is already finalized).
  ~SyncBatchNorm1d() = default;

  /// Normalizes @p input ((N, C) or (N, C, L), the module's dtype, any strides; N may be 0 on
  /// some ranks) with the global batch statistics (training mode, or no running statistics) or
  /// the running statistics (eval mode). Returns a new contiguous tensor of the input's shape and
  /// saves a reference to the input for backward(). Collective in every mode (the header at
  /// least: see the class comment); module().infer() is not.
  Tensor forward(const Tensor& input);
  /// Same as forward().
  Tensor operator()(const Tensor& input) { return forward(input); }
  /// forward() into a caller-owned buffer (BatchNorm1d's reuse rule).
  void forward(const Tensor& input, Tensor& output);

  /// Masked forward() (BatchNorm1d::forward with ValidPositions): the statistics of the valid
  /// values of every rank; the ranks' valid counts may differ (a rank may have none).
  Tensor forward(const Tensor& input, const ValidPositions& valid);
  /// Masked forward() into a caller-owned buffer.
  void forward(const Tensor& input, Tensor& output, const ValidPositions& valid);
  /// Gradients of the most recent forward(): the input gradient of the global loss with respect
  /// to this rank's input; weight and bias gradients of this rank's part (sum them across ranks).
  /// Collective (the header, plus the per-channel sums when the forward used batch statistics).
  /// Throws Error before any forward().
  Gradients backward(const Tensor& grad_output);
  /// backward() into caller-owned buffers.
  void backward(const Tensor& grad_output, Gradients& grads);

  /// Sets training (true) or evaluation (false) mode; returns *this.
  SyncBatchNorm1d& train(bool on = true) noexcept {
    module_.train(on);
    return *this;
  }
  /// Sets evaluation mode; returns *this.
  SyncBatchNorm1d& eval() noexcept { return train(false); }
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
  /// Number of training forwards seen while tracking (the same on every rank).
  int64_t num_batches_tracked() const noexcept { return module_.num_batches_tracked(); }
  /// The options the module was built with.
  const BatchNorm1dOptions& options() const noexcept { return module_.options(); }
  /// The underlying module holding parameters, buffers and num_batches_tracked; e.g.
  /// module().infer(x), which uses the running statistics and makes no collective (inference on
  /// one rank alone).
  const BatchNorm1d& module() const noexcept { return module_; }

  /// The module's own duplicate of the communicator (MPI_COMM_NULL once moved from).
  MPI_Comm comm() const noexcept { return combiner_.comm(); }
  /// This process's rank in comm().
  int rank() const noexcept { return combiner_.rank(); }
  /// Number of ranks of comm().
  int world_size() const noexcept { return combiner_.world_size(); }

  /// Bytes this rank contributes to the two MPI_Allgathers of a synchronized forward with
  /// @p num_features channels: the header (MpiStatsCombiner::header_bytes(), 112) plus the
  /// float64 record [mean[C], M2[C]]; every rank receives world_size() of each. An eval forward
  /// with running statistics sends the header only.
  static std::size_t forward_record_bytes(int64_t num_features) noexcept {
    return MpiStatsCombiner::stats_record_bytes(num_features);
  }
  /// As forward_record_bytes for backward: the header plus [Σdy[C], Σdy·(x − mean)[C]].
  static std::size_t backward_record_bytes(int64_t num_features) noexcept {
    return MpiStatsCombiner::grads_record_bytes(num_features);
  }

  /// BatchNorm1d's state dict (PyTorch's keys).
  StateDict state_dict() const { return module_.state_dict(); }
  /// As BatchNorm1d::load_state_dict (local: load the same state on every rank).
  void load_state_dict(const StateDict& state, bool strict = true) {
    module_.load_state_dict(state, strict);
  }
  /// Saves state_dict() to @p path as safetensors (e.g. on rank 0 only).
  void save(const std::string& path) const { module_.save(path); }
  /// As BatchNorm1d::load.
  void load(const std::string& path, const std::string& prefix = "") { module_.load(path, prefix); }

 private:
  BatchNorm1d module_;         // options, parameters, buffers, the training step
  MpiStatsCombiner combiner_;  // the communicator and its collectives
};

/// Prints `SyncBatchNorm1d(100, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)`,
/// with BatchNorm1d's activation text when one is set.
std::ostream& operator<<(std::ostream& os, const SyncBatchNorm1d& module);

}  // namespace bn1d
