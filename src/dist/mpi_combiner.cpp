// SPDX-License-Identifier: MIT
// MpiStatsCombiner: one MPI_Allgather of a fixed-size record per combine, then identical
// decisions on every rank. Uses bn1d's public API only.
#include "bn1d/dist/mpi_combiner.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <exception>
#include <string>
#include <utility>

#include "bn1d/error.hpp"

namespace bn1d {
namespace {

// Stats record: header, then mean[C], M2[C].
constexpr std::size_t kStatsHeader = 7;
enum StatsField : std::size_t { fStatus, fCount, fChannels, fDtype, fMode, fMomentum, fEps };
// Grads record: header, then Σdy[C], Σdy·(x − mean)[C].
constexpr std::size_t kGradsHeader = 3;
enum GradsField : std::size_t { gStatus, gCount, gChannels };

std::string mpi_error(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "error code " + std::to_string(rc);
  return std::string(text, static_cast<std::size_t>(len));
}

void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS)
    throw Error(std::string("SyncBatchNorm1d: ") + what + " failed: " + mpi_error(rc));
}

std::size_t record_size(std::size_t header, int64_t C) {
  const auto n = header + 2 * static_cast<std::size_t>(C);
  if (n > static_cast<std::size_t>(INT_MAX)) {
    throw Error("SyncBatchNorm1d: num_features " + std::to_string(C) +
                " is too large for one MPI message");
  }
  return n;
}

// The shortest text that reads back as @p v (Python's repr for the values a record holds).
std::string repr(double v) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof(text), v).ptr;
  std::string s(text, end);
  if (s.find_first_of(".eni") == std::string::npos) s += ".0";
  return s;
}

// A {C} float64 tensor holding src[0, C).
void copy_channels(Tensor& dst, const double* src, int64_t C) {
  if (!dst.defined() || dst.numel() != C) dst = Tensor::empty({C}, DType::Float64);
  std::memcpy(dst.data<double>(), src, static_cast<std::size_t>(C) * sizeof(double));
}

void store_channels(double* dst, const Tensor& src, int64_t C) {
  std::memcpy(dst, src.data<double>(), static_cast<std::size_t>(C) * sizeof(double));
}

// Throws on every rank when a record reports a failure: this rank's own error here, "rank R
// failed" on the others.
void raise_failures(const std::vector<double>& gathered, std::size_t n, int size,
                    const LocalOutcome& own) {
  if (own.error) std::rethrow_exception(own.error);
  for (int r = 0; r < size; ++r) {
    const auto status = static_cast<StepFailure>(gathered[static_cast<std::size_t>(r) * n]);
    if (status != StepFailure::None) {
      throw Error("SyncBatchNorm1d: rank " + std::to_string(r) + " failed: " + describe(status));
    }
  }
}

// Throws on every rank when field @p f of some record differs from rank 0's.
void check_agreement(const std::vector<double>& gathered, std::size_t n, int size, std::size_t f,
                     const char* what) {
  const double first = gathered[f];
  for (int r = 1; r < size; ++r) {
    const double value = gathered[static_cast<std::size_t>(r) * n + f];
    if (std::memcmp(&value, &first, sizeof(double)) != 0) {
      throw Error(std::string("SyncBatchNorm1d: ranks disagree on ") + what + " (rank 0: " +
                  repr(first) + ", rank " + std::to_string(r) + ": " + repr(value) + ")");
    }
  }
}

}  // namespace

MpiStatsCombiner::MpiStatsCombiner(MPI_Comm comm) {
  int initialized = 0, finalized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  check_mpi(MPI_Finalized(&finalized), "MPI_Finalized");
  if (!initialized || finalized) {
    throw Error("SyncBatchNorm1d: MPI must be initialized (and not finalized)");
  }
  if (comm == MPI_COMM_NULL) throw Error("SyncBatchNorm1d: comm is MPI_COMM_NULL");
  check_mpi(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
  try {
    check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  } catch (...) {
    release();
    throw;
  }
}

MpiStatsCombiner::MpiStatsCombiner(MpiStatsCombiner&& other) noexcept
    : comm_(std::exchange(other.comm_, MPI_COMM_NULL)), rank_(other.rank_), size_(other.size_) {}

MpiStatsCombiner& MpiStatsCombiner::operator=(MpiStatsCombiner&& other) noexcept {
  if (this != &other) {
    release();
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    rank_ = other.rank_;
    size_ = other.size_;
  }
  return *this;
}

MpiStatsCombiner::~MpiStatsCombiner() { release(); }

void MpiStatsCombiner::release() noexcept {
  if (comm_ == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&comm_);
  comm_ = MPI_COMM_NULL;
}

std::size_t MpiStatsCombiner::stats_record_bytes(int64_t num_features) noexcept {
  return (kStatsHeader + 2 * static_cast<std::size_t>(num_features)) * sizeof(double);
}

std::size_t MpiStatsCombiner::grads_record_bytes(int64_t num_features) noexcept {
  return (kGradsHeader + 2 * static_cast<std::size_t>(num_features)) * sizeof(double);
}

void MpiStatsCombiner::allgather(std::size_t n) {
  if (comm_ == MPI_COMM_NULL) throw Error("SyncBatchNorm1d: use of a moved-from module");
  gathered_.resize(n * static_cast<std::size_t>(size_));
  if (size_ == 1) {
    std::copy_n(record_.begin(), n, gathered_.begin());
    return;
  }
  check_mpi(MPI_Allgather(record_.data(), static_cast<int>(n), MPI_DOUBLE, gathered_.data(),
                          static_cast<int>(n), MPI_DOUBLE, comm_),
            "MPI_Allgather");
}

const BatchStats& MpiStatsCombiner::combine_stats(const StepConfig& config, const BatchStats& local,
                                                  const LocalOutcome& outcome) {
  const int64_t C = config.num_features;
  const std::size_t n = record_size(kStatsHeader, C);
  const auto uC = static_cast<std::size_t>(C);
  record_.assign(n, 0.0);
  record_[fStatus] = static_cast<double>(outcome.failure);
  record_[fChannels] = static_cast<double>(C);
  record_[fDtype] = config.dtype == DType::Float64 ? 1.0 : 0.0;
  record_[fMode] = (config.training ? 1.0 : 0.0) + (config.track_running_stats ? 2.0 : 0.0) +
                   (config.affine ? 4.0 : 0.0);
  record_[fMomentum] = config.momentum.value_or(-1.0);
  record_[fEps] = config.eps;
  if (outcome.failure == StepFailure::None) {
    record_[fCount] = static_cast<double>(local.count);
    store_channels(record_.data() + kStatsHeader, local.mean, C);
    store_channels(record_.data() + kStatsHeader + uC, local.m2, C);
  }

  allgather(n);
  raise_failures(gathered_, n, size_, outcome);
  check_agreement(gathered_, n, size_, fChannels, "num_features");
  check_agreement(gathered_, n, size_, fDtype, "the dtype (0 float32, 1 float64)");
  check_agreement(gathered_, n, size_, fMode,
                  "the mode (1 training + 2 track_running_stats + 4 affine)");
  check_agreement(gathered_, n, size_, fMomentum, "momentum (-1 for None)");
  check_agreement(gathered_, n, size_, fEps, "eps");

  stats_parts_.resize(static_cast<std::size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    const double* rec = gathered_.data() + static_cast<std::size_t>(r) * n;
    BatchStats& p = stats_parts_[static_cast<std::size_t>(r)];
    p.count = static_cast<int64_t>(rec[fCount]);
    copy_channels(p.mean, rec + kStatsHeader, C);
    copy_channels(p.m2, rec + kStatsHeader + uC, C);
  }
  global_stats_ = bn1d::combine_stats(stats_parts_);
  return global_stats_;
}

const GradStats& MpiStatsCombiner::combine_grads(const StepConfig& config, const GradStats& local,
                                                 const LocalOutcome& outcome) {
  const int64_t C = config.num_features;
  const std::size_t n = record_size(kGradsHeader, C);
  const auto uC = static_cast<std::size_t>(C);
  record_.assign(n, 0.0);
  record_[gStatus] = static_cast<double>(outcome.failure);
  record_[gChannels] = static_cast<double>(C);
  if (outcome.failure == StepFailure::None) {
    record_[gCount] = static_cast<double>(local.count);
    store_channels(record_.data() + kGradsHeader, local.sum_dy, C);
    store_channels(record_.data() + kGradsHeader + uC, local.sum_dy_xmu, C);
  }

  allgather(n);
  raise_failures(gathered_, n, size_, outcome);
  check_agreement(gathered_, n, size_, gChannels, "num_features");

  grads_parts_.resize(static_cast<std::size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    const double* rec = gathered_.data() + static_cast<std::size_t>(r) * n;
    GradStats& p = grads_parts_[static_cast<std::size_t>(r)];
    p.count = static_cast<int64_t>(rec[gCount]);
    copy_channels(p.sum_dy, rec + kGradsHeader, C);
    copy_channels(p.sum_dy_xmu, rec + kGradsHeader + uC, C);
  }
  global_grads_ = combine_grad_stats(grads_parts_);
  return global_grads_;
}

}  // namespace bn1d
