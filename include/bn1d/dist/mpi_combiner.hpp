// SPDX-License-Identifier: MIT
/// @file mpi_combiner.hpp
/// @brief MpiStatsCombiner: combines a training step's statistics over an MPI communicator.
///
/// Part of the optional library bn1d::dist (built when CMake finds MPI).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bn1d/batch_norm.hpp"
#include "bn1d/combine.hpp"

namespace bn1d {

/// The StatsCombiner of SyncBatchNorm1d: every call is one MPI_Allgather of a fixed-size float64
/// record per rank, merged in rank order (deterministic, identical on every rank):
/// - combine_stats: [status, count, C, dtype, mode, momentum, eps, mean[C], M2[C]], merged with
///   combine_stats() (Chan's formula);
/// - combine_grads: [status, count, C, Σdy[C], Σdy·(x − mean)[C]], summed with
///   combine_grad_stats().
/// Every rank takes part even when its own step failed: then every rank throws bn1d::Error — the
/// failing rank its own error, the others "SyncBatchNorm1d: rank R failed: <reason>" — and so
/// does every rank when the ranks disagree on the configuration (num_features, dtype, mode,
/// momentum, eps). A communicator of one rank makes no collective. Move-only: it owns a
/// duplicate of the communicator, freed on destruction (collective).
class MpiStatsCombiner final : public StatsCombiner {
 public:
  /// Duplicates @p comm (collective) and sets MPI_ERRORS_RETURN on the duplicate. Throws Error
  /// when MPI is not initialized (or finalized), @p comm is MPI_COMM_NULL, or an MPI call fails.
  explicit MpiStatsCombiner(MPI_Comm comm);
  MpiStatsCombiner(const MpiStatsCombiner&) = delete;
  MpiStatsCombiner& operator=(const MpiStatsCombiner&) = delete;
  /// Takes over @p other's communicator; @p other is left without one (its calls throw).
  MpiStatsCombiner(MpiStatsCombiner&& other) noexcept;
  /// Frees this combiner's communicator, then takes over @p other's.
  MpiStatsCombiner& operator=(MpiStatsCombiner&& other) noexcept;
  /// Frees the communicator duplicate (skipped when MPI is already finalized).
  ~MpiStatsCombiner() override;

  /// The global statistics of every rank's batch (see the class comment).
  const BatchStats& combine_stats(const StepConfig& config, const BatchStats& local,
                                  const LocalOutcome& outcome) override;
  /// The global gradient sums of every rank's batch (see the class comment).
  const GradStats& combine_grads(const StepConfig& config, const GradStats& local,
                                 const LocalOutcome& outcome) override;
  /// False: the batch spans the ranks.
  bool local_only() const noexcept override { return false; }
  /// "SyncBatchNorm1d".
  const char* module_name() const noexcept override { return "SyncBatchNorm1d"; }

  /// The combiner's own duplicate of the communicator (MPI_COMM_NULL once moved from).
  MPI_Comm comm() const noexcept { return comm_; }
  /// This process's rank in comm().
  int rank() const noexcept { return rank_; }
  /// Number of ranks of comm().
  int world_size() const noexcept { return size_; }

  /// Bytes of one rank's combine_stats record for @p num_features channels.
  static std::size_t stats_record_bytes(int64_t num_features) noexcept;
  /// Bytes of one rank's combine_grads record for @p num_features channels.
  static std::size_t grads_record_bytes(int64_t num_features) noexcept;

 private:
  // Allgathers record_ (@p n doubles per rank) into gathered_; no collective for one rank.
  void allgather(std::size_t n);
  void release() noexcept;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  // Reused buffers.
  std::vector<double> record_;
  std::vector<double> gathered_;
  std::vector<BatchStats> stats_parts_;
  std::vector<GradStats> grads_parts_;
  BatchStats global_stats_;
  GradStats global_grads_;
};

}  // namespace bn1d
