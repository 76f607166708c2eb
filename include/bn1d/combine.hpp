// SPDX-License-Identifier: MIT
/// @file combine.hpp
/// @brief How a training step combines per-channel partial results across participants.
///
/// BatchNorm1d's training step is: local statistics → combine → normalize; backward: local sums
/// → combine → apply. A StatsCombiner is the "combine": BatchNorm1d's own forward()/backward()
/// use the local batch alone; SyncBatchNorm1d passes one that merges the partial results of
/// every rank of an MPI communicator. Any other transport (another collective library, virtual
/// batches) plugs in the same way.
#pragma once

#include <cstdint>
#include <exception>
#include <optional>

#include "bn1d/batch_norm.hpp"
#include "bn1d/tensor.hpp"

namespace bn1d {

/// The configuration of one step, which every participant of a combined step must share.
struct StepConfig {
  int64_t num_features = 0;         ///< C
  DType dtype = DType::Float32;     ///< the module's dtype
  bool training = true;             ///< training mode
  bool track_running_stats = true;  ///< the module keeps running statistics
  bool affine = true;               ///< the module has weight and bias
  std::optional<double> momentum;   ///< std::nullopt: cumulative average
  double eps = 0.0;                 ///< added to the variance
  FusedActivation activation;       ///< the activation fused into the output
};

/// Why a participant's step failed before its partial results could be combined.
enum class StepFailure : int {
  None = 0,            ///< no failure
  InvalidInput = 1,    ///< not a 2-D or 3-D floating tensor
  WrongChannels = 2,   ///< the input's channel count is not num_features
  WrongDtype = 3,      ///< the input's dtype is not the module's
  InvalidState = 4,    ///< a parameter or buffer has the wrong shape or dtype
  NoForward = 5,       ///< backward before any forward
  WrongGradShape = 6,  ///< grad_output does not match the saved input
  Internal = 7,        ///< anything else (e.g. out of memory)
};

/// A short description of @p failure for the other participants' error messages, e.g. "input
/// with the wrong channel count".
const char* describe(StepFailure failure) noexcept;

/// Which call of the training step a combiner call belongs to.
enum class CallKind : int {
  Forward = 0,   ///< forward()
  Backward = 1,  ///< backward()
};

/// This participant's outcome before combining: its failure (None when it has partial results)
/// and, where it failed, the exception it raised (rethrown on this participant).
struct LocalOutcome {
  StepFailure failure = StepFailure::None;  ///< why this participant failed, if it did
  std::exception_ptr error;                 ///< the exception that failure raised
};

/// Combines the per-channel partial results of a step's participants. Every forward() and
/// backward() of a module makes exactly one call, on every participant, in the same order, with
/// its partial results or its failure — never skipped on error — so that an implementation over a
/// collective leaves no participant waiting: combine_stats() for a forward with batch statistics,
/// combine_grads() for the backward of such a forward, agree() for the calls that combine nothing
/// (a forward with running statistics, the backward of such a forward). A call that throws must
/// throw on every participant (the failing one with its own error).
class StatsCombiner {
 public:
  virtual ~StatsCombiner() = default;

  /// The statistics of the global batch from this participant's @p local ones (unspecified when
  /// @p outcome reports a failure). The result stays valid until the next call on this combiner
  /// or a change of @p local.
  virtual const BatchStats& combine_stats(const StepConfig& config, const BatchStats& local,
                                          const LocalOutcome& outcome) = 0;

  /// The gradient sums of the global batch from this participant's @p local ones, as above.
  virtual const GradStats& combine_grads(const StepConfig& config, const GradStats& local,
                                         const LocalOutcome& outcome) = 0;

  /// A call that combines nothing: a forward with running statistics (eval mode with
  /// track_running_stats), or the backward of such a forward (or a backward before any forward in
  /// that mode). It lets the participants check that they all make the same call with the same
  /// configuration and that none failed; it throws on every participant otherwise. The step
  /// rethrows @p outcome's error itself when agree() returns. The default does nothing (a module
  /// on its own: no cost, no allocation).
  virtual void agree(const StepConfig& /*config*/, CallKind /*call*/,
                     const LocalOutcome& /*outcome*/) {}

  /// True when the combined batch is the local batch alone (error messages then speak of the
  /// input, as torch's do).
  virtual bool local_only() const noexcept { return false; }

  /// The name of the module this combiner makes, for error messages ("BatchNorm1d" for a
  /// module on its own, "SyncBatchNorm1d" across ranks).
  virtual const char* module_name() const noexcept { return "BatchNorm1d"; }
};

}  // namespace bn1d
