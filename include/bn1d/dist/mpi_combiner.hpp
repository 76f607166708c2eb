// SPDX-License-Identifier: MIT
/// @file mpi_combiner.hpp
/// @brief MpiStatsCombiner: combines a training step's statistics over an MPI communicator.
///
/// Part of the optional library bn1d::dist (built when CMake finds MPI).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "bn1d/batch_norm.hpp"
#include "bn1d/combine.hpp"

namespace bn1d {

/// The StatsCombiner of SyncBatchNorm1d. Every call first allgathers a **fixed-size header**
/// (kHeaderValues int64 values per rank, whatever the call and C):
///   [call (0 forward, 1 backward), statistics (1 batch statistics: synchronized, 0 running
///    statistics: local), status (StepFailure; -1 for a moved-from module), num_features, dtype,
///    training, affine, track_running_stats, has momentum, momentum (bits), eps (bits),
///    activation, negative_slope (bits; 0 but for LeakyReLU), count]
/// and checks it identically on every rank, in this order: a moved-from module on some rank;
/// then agreement on the call, num_features, dtype, affine, track_running_stats, momentum, eps,
/// the activation, negative_slope, the mode (forward) and the statistics (backward: synchronized
/// or local); then the statuses.
/// Any of these makes **every** rank throw bn1d::Error: "SyncBatchNorm1d: ranks disagree on
/// <what> (rank 0: <value>, rank R: <value>)", the failing rank its own error and the others
/// "SyncBatchNorm1d: rank R failed: <reason>". Only when all headers agree and no rank failed do
/// combine_stats/combine_grads exchange the per-channel records, one MPI_Allgather of 2·C float64
/// per rank (its length fixed by the agreed C), merged in rank order (deterministic, identical on
/// every rank):
/// - combine_stats: [mean[C], M2[C]], merged with combine_stats() (Chan's formula) with the
///   header's counts;
/// - combine_grads: [Σdy[C], Σdy·(x − mean)[C]], summed with combine_grad_stats().
/// agree() (eval forward with running statistics, its backward) exchanges the header only.
/// A communicator of one rank makes no collective.
///
/// Move-only: it owns a duplicate of the communicator. A moved-from combiner keeps a reference
/// to that duplicate (freed when the last holder is destroyed; collective) so that its calls,
/// which are errors, still reach the header collective: every rank then throws instead of
/// waiting ("SyncBatchNorm1d: use of a moved-from module" on the rank that made the mistake).
class MpiStatsCombiner final : public StatsCombiner {
 public:
  /// Number of int64 values of the header every call allgathers first.
  static constexpr std::size_t kHeaderValues = 14;

  /// Duplicates @p comm (collective) and sets MPI_ERRORS_RETURN on the duplicate. Throws Error
  /// when MPI is not initialized (or finalized), @p comm is MPI_COMM_NULL, or an MPI call fails.
  explicit MpiStatsCombiner(MPI_Comm comm);
  MpiStatsCombiner(const MpiStatsCombiner&) = delete;
  MpiStatsCombiner& operator=(const MpiStatsCombiner&) = delete;
  /// Takes over @p other's communicator; @p other becomes moved-from (its calls throw on every
  /// rank, see the class comment).
  MpiStatsCombiner(MpiStatsCombiner&& other) noexcept;
  /// Releases this combiner's communicator, then takes over @p other's.
  MpiStatsCombiner& operator=(MpiStatsCombiner&& other) noexcept;
  /// Releases the communicator duplicate (freed with its last holder; skipped when MPI is
  /// already finalized).
  ~MpiStatsCombiner() override;

  /// The global statistics of every rank's batch (see the class comment).
  const BatchStats& combine_stats(const StepConfig& config, const BatchStats& local,
                                  const LocalOutcome& outcome) override;
  /// The global gradient sums of every rank's batch (see the class comment).
  const GradStats& combine_grads(const StepConfig& config, const GradStats& local,
                                 const LocalOutcome& outcome) override;
  /// The header exchange alone, for the calls that combine nothing (see the class comment).
  void agree(const StepConfig& config, CallKind call, const LocalOutcome& outcome) override;
  /// False: the batch spans the ranks.
  bool local_only() const noexcept override { return false; }
  /// "SyncBatchNorm1d".
  const char* module_name() const noexcept override { return "SyncBatchNorm1d"; }

  /// The combiner's own duplicate of the communicator (MPI_COMM_NULL once moved from).
  MPI_Comm comm() const noexcept;
  /// This process's rank in comm().
  int rank() const noexcept { return rank_; }
  /// Number of ranks of comm().
  int world_size() const noexcept { return size_; }

  /// Bytes of the header every call allgathers first, per rank (kHeaderValues int64 values).
  static constexpr std::size_t header_bytes() noexcept { return kHeaderValues * sizeof(int64_t); }
  /// Bytes of one rank's combine_stats records for @p num_features channels: the header plus
  /// the per-channel record [mean[C], M2[C]] (float64).
  static std::size_t stats_record_bytes(int64_t num_features) noexcept;
  /// Bytes of one rank's combine_grads records for @p num_features channels: the header plus
  /// the per-channel record [Σdy[C], Σdy·(x − mean)[C]] (float64).
  static std::size_t grads_record_bytes(int64_t num_features) noexcept;

 private:
  struct SharedComm;  // the duplicate, freed by its last holder

  // Allgathers the header of this call and checks it (throws on every rank, see the class
  // comment). @p statistics: 1 when the call synchronizes batch statistics. @p n_record: the
  // doubles of the per-channel record to follow (0 for agree()), allocated before the exchange.
  void exchange_header(const StepConfig& config, CallKind call, bool statistics,
                       const LocalOutcome& outcome, int64_t count, std::size_t n_record);
  // Allgathers record_ (@p n doubles per rank) into gathered_; no collective for one rank.
  void allgather_records(std::size_t n);
  MPI_Comm raw_comm() const noexcept;

  std::shared_ptr<SharedComm> comm_;
  bool moved_from_ = false;
  int rank_ = 0;
  int size_ = 1;
  // Reused buffers.
  std::vector<int64_t> header_;
  std::vector<int64_t> headers_;
  std::vector<double> record_;
  std::vector<double> gathered_;
  std::vector<BatchStats> stats_parts_;
  std::vector<GradStats> grads_parts_;
  BatchStats global_stats_;
  GradStats global_grads_;
};

}  // namespace bn1d
