// SPDX-License-Identifier: MIT
// MpiStatsCombiner: one MPI_Allgather of a fixed-size header per call, identical decisions on
// every rank, then (combine_stats/combine_grads) one MPI_Allgather of the per-channel records.
// Uses bn1d's public API only.
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

// The header: fixed size, the same layout for every call.
enum HeaderField : std::size_t {
  hCall,         // CallKind
  hStatistics,   // 1 batch statistics (synchronized), 0 running statistics (local)
  hStatus,       // StepFailure, or kMovedFrom
  hChannels,     // num_features
  hDtype,        // DType
  hTraining,     // 0/1
  hAffine,       // 0/1
  hTrack,        // 0/1 track_running_stats
  hHasMomentum,  // 0: None (cumulative average)
  hMomentum,     // bits of the float64 momentum (0 without)
  hEps,          // bits of the float64 eps
  hActivation,   // Activation
  hSlope,        // bits of the float64 negative_slope of a LeakyReLU (0 otherwise: unused)
  hCount,        // values per channel on this rank (0 on failure)
  kHeaderSize
};
static_assert(kHeaderSize == MpiStatsCombiner::kHeaderValues);

constexpr int64_t kMovedFrom = -1;  // status of a moved-from combiner

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

// The shortest text that reads back as @p v (Python's repr for the values a header holds).
std::string repr(double v) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof(text), v).ptr;
  std::string s(text, end);
  if (s.find_first_of(".eni") == std::string::npos) s += ".0";
  return s;
}

int64_t bits(double v) {
  int64_t b = 0;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

double from_bits(int64_t b) {
  double v = 0;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// A {C} float64 tensor holding src[0, C).
void copy_channels(Tensor& dst, const double* src, int64_t C) {
  if (!dst.defined() || dst.numel() != C) dst = Tensor::empty({C}, DType::Float64);
  std::memcpy(dst.data<double>(), src, static_cast<std::size_t>(C) * sizeof(double));
}

void store_channels(double* dst, const Tensor& src, int64_t C) {
  std::memcpy(dst, src.data<double>(), static_cast<std::size_t>(C) * sizeof(double));
}

// Every rank's partial results, in rank order, from the gathered records (two {C} columns each:
// the members @p first and @p second) and the counts of the headers.
template <class Part>
void unpack_parts(std::vector<Part>& parts, Tensor Part::*first, Tensor Part::*second,
                  const std::vector<double>& gathered, const std::vector<int64_t>& headers,
                  int size, int64_t C) {
  const auto uC = static_cast<std::size_t>(C);
  parts.resize(static_cast<std::size_t>(size));
  for (std::size_t r = 0; r < parts.size(); ++r) {
    const double* rec = gathered.data() + r * 2 * uC;
    parts[r].count = headers[r * kHeaderSize + hCount];
    copy_channels(parts[r].*first, rec, C);
    copy_channels(parts[r].*second, rec + uC, C);
  }
}

const char* flag(int64_t v) { return v ? "true" : "false"; }

// What field @p f of header @p h says, for the messages.
std::string field_text(const int64_t* h, std::size_t f) {
  switch (f) {
    case hCall:
      return h[f] == static_cast<int64_t>(CallKind::Forward) ? "forward" : "backward";
    case hChannels:
      return std::to_string(h[f]);
    case hDtype:
      return dtype_name(static_cast<DType>(h[f]));
    case hAffine:
    case hTrack:
      return flag(h[f]);
    case hMomentum:
      return h[hHasMomentum] ? repr(from_bits(h[hMomentum])) : "None";
    case hEps:
      return repr(from_bits(h[hEps]));
    case hActivation:
      return activation_name(static_cast<Activation>(h[hActivation]));
    case hSlope:
      return repr(from_bits(h[hSlope]));
    case hTraining:
      return h[hTraining] ? "training"
             : h[hTrack]  ? "eval with running statistics"
                          : "eval with batch statistics";
    case hStatistics:
      return h[hStatistics] ? "synchronized, after a forward with batch statistics"
                            : "local, after a forward with running statistics";
    default:
      return std::to_string(h[f]);
  }
}

// Throws on every rank when field @p f (and @p also, when given) of some header differs from
// rank 0's.
void check_agreement(const std::vector<int64_t>& headers, int size, std::size_t f, const char* what,
                     std::size_t also = kHeaderSize) {
  const int64_t* first = headers.data();
  for (int r = 1; r < size; ++r) {
    const int64_t* h = headers.data() + static_cast<std::size_t>(r) * kHeaderSize;
    if (h[f] != first[f] || (also != kHeaderSize && h[also] != first[also])) {
      throw Error(std::string("SyncBatchNorm1d: ranks disagree on ") + what +
                  " (rank 0: " + field_text(first, f) + ", rank " + std::to_string(r) + ": " +
                  field_text(h, f) + ")");
    }
  }
}

// The checks of the class comment, in its order, on the headers of every rank (the same on
// every rank, so every rank throws or none does).
void check_headers(const std::vector<int64_t>& headers, int size, int rank,
                   const LocalOutcome& own) {
  auto at = [&](int r, std::size_t f) {
    return headers[static_cast<std::size_t>(r) * kHeaderSize + f];
  };
  for (int r = 0; r < size; ++r) {
    if (at(r, hStatus) != kMovedFrom) continue;
    if (at(rank, hStatus) == kMovedFrom) {
      throw Error(
          "SyncBatchNorm1d: use of a moved-from module (its state and communicator were moved "
          "to another module); every rank of its communicator throws");
    }
    throw Error("SyncBatchNorm1d: rank " + std::to_string(r) +
                " failed: it called a moved-from module");
  }
  check_agreement(headers, size, hCall, "the call");
  check_agreement(headers, size, hChannels, "num_features");
  check_agreement(headers, size, hDtype, "the dtype");
  check_agreement(headers, size, hAffine, "affine");
  check_agreement(headers, size, hTrack, "track_running_stats");
  check_agreement(headers, size, hMomentum, "momentum", hHasMomentum);
  check_agreement(headers, size, hEps, "eps");
  check_agreement(headers, size, hActivation, "the activation");
  check_agreement(headers, size, hSlope, "negative_slope");
  if (at(0, hCall) == static_cast<int64_t>(CallKind::Forward)) {
    check_agreement(headers, size, hTraining, "the mode");
  }
  check_agreement(headers, size, hStatistics,
                  at(0, hCall) == static_cast<int64_t>(CallKind::Forward)
                      ? "the statistics of the forward"
                      : "the backward");
  if (own.error) std::rethrow_exception(own.error);
  for (int r = 0; r < size; ++r) {
    const int64_t status = at(r, hStatus);
    if (status != static_cast<int64_t>(StepFailure::None)) {
      throw Error("SyncBatchNorm1d: rank " + std::to_string(r) +
                  " failed: " + describe(static_cast<StepFailure>(status)));
    }
  }
}

}  // namespace

struct MpiStatsCombiner::SharedComm {
  MPI_Comm comm = MPI_COMM_NULL;
  SharedComm() = default;
  SharedComm(const SharedComm&) = delete;
  SharedComm& operator=(const SharedComm&) = delete;
  ~SharedComm() {
    if (comm == MPI_COMM_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm);
  }
};

MpiStatsCombiner::MpiStatsCombiner(MPI_Comm comm) {
  int initialized = 0, finalized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  check_mpi(MPI_Finalized(&finalized), "MPI_Finalized");
  if (!initialized || finalized) {
    throw Error("SyncBatchNorm1d: MPI must be initialized (and not finalized)");
  }
  if (comm == MPI_COMM_NULL) throw Error("SyncBatchNorm1d: comm is MPI_COMM_NULL");
  comm_ = std::make_shared<SharedComm>();
  check_mpi(MPI_Comm_dup(comm, &comm_->comm), "MPI_Comm_dup");  // freed by ~SharedComm
  check_mpi(MPI_Comm_set_errhandler(comm_->comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check_mpi(MPI_Comm_rank(comm_->comm, &rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm_->comm, &size_), "MPI_Comm_size");
}

// The moved-from combiner keeps a reference to the communicator: see the class comment.
MpiStatsCombiner::MpiStatsCombiner(MpiStatsCombiner&& other) noexcept
    : comm_(other.comm_),
      moved_from_(std::exchange(other.moved_from_, true)),
      rank_(other.rank_),
      size_(other.size_) {}

MpiStatsCombiner& MpiStatsCombiner::operator=(MpiStatsCombiner&& other) noexcept {
  if (this != &other) {
    comm_ = other.comm_;
    moved_from_ = std::exchange(other.moved_from_, true);
    rank_ = other.rank_;
    size_ = other.size_;
  }
  return *this;
}

MpiStatsCombiner::~MpiStatsCombiner() = default;

MPI_Comm MpiStatsCombiner::raw_comm() const noexcept { return comm_ ? comm_->comm : MPI_COMM_NULL; }

MPI_Comm MpiStatsCombiner::comm() const noexcept {
  return moved_from_ ? MPI_COMM_NULL : raw_comm();
}

std::size_t MpiStatsCombiner::stats_record_bytes(int64_t num_features) noexcept {
  return header_bytes() + 2 * static_cast<std::size_t>(num_features) * sizeof(double);
}

std::size_t MpiStatsCombiner::grads_record_bytes(int64_t num_features) noexcept {
  return header_bytes() + 2 * static_cast<std::size_t>(num_features) * sizeof(double);
}

void MpiStatsCombiner::exchange_header(const StepConfig& config, CallKind call, bool statistics,
                                       const LocalOutcome& outcome, int64_t count,
                                       std::size_t n_record) {
  LocalOutcome own = outcome;
  StepFailure failure = outcome.failure;
  // The record buffers are allocated before the exchange: a failure to allocate them is this
  // rank's failure, reported in its header, rather than a rank missing the record exchange.
  if (n_record > 0 && failure == StepFailure::None) {
    try {
      if (n_record > static_cast<std::size_t>(INT_MAX)) {
        throw Error("SyncBatchNorm1d: num_features " + std::to_string(config.num_features) +
                    " is too large for one MPI message");
      }
      record_.resize(n_record);
      gathered_.resize(n_record * static_cast<std::size_t>(size_));
    } catch (...) {
      failure = StepFailure::Internal;
      own.error = std::current_exception();
    }
  }
  header_.assign(kHeaderSize, 0);
  header_[hCall] = static_cast<int64_t>(call);
  header_[hStatistics] = statistics ? 1 : 0;
  header_[hStatus] = moved_from_ ? kMovedFrom : static_cast<int64_t>(failure);
  header_[hChannels] = config.num_features;
  header_[hDtype] = static_cast<int64_t>(config.dtype);
  header_[hTraining] = config.training ? 1 : 0;
  header_[hAffine] = config.affine ? 1 : 0;
  header_[hTrack] = config.track_running_stats ? 1 : 0;
  header_[hHasMomentum] = config.momentum.has_value() ? 1 : 0;
  header_[hMomentum] = config.momentum ? bits(*config.momentum) : 0;
  header_[hEps] = bits(config.eps);
  header_[hActivation] = static_cast<int64_t>(config.activation.kind);
  const bool leaky = config.activation.kind == Activation::LeakyReLU;
  header_[hSlope] = leaky ? bits(config.activation.negative_slope) : 0;
  header_[hCount] = failure == StepFailure::None ? count : 0;
  headers_.resize(kHeaderSize * static_cast<std::size_t>(size_));
  if (size_ == 1) {
    std::copy(header_.begin(), header_.end(), headers_.begin());
  } else if (raw_comm() != MPI_COMM_NULL) {
    check_mpi(
        MPI_Allgather(header_.data(), static_cast<int>(kHeaderSize), MPI_INT64_T, headers_.data(),
                      static_cast<int>(kHeaderSize), MPI_INT64_T, raw_comm()),
        "MPI_Allgather");
  } else {
    throw Error("SyncBatchNorm1d: the module has no communicator");
  }
  check_headers(headers_, size_, rank_, own);
}

void MpiStatsCombiner::allgather_records(std::size_t n) {
  if (size_ == 1) {
    std::copy_n(record_.begin(), n, gathered_.begin());
    return;
  }
  check_mpi(MPI_Allgather(record_.data(), static_cast<int>(n), MPI_DOUBLE, gathered_.data(),
                          static_cast<int>(n), MPI_DOUBLE, raw_comm()),
            "MPI_Allgather");
}

void MpiStatsCombiner::agree(const StepConfig& config, CallKind call, const LocalOutcome& outcome) {
  exchange_header(config, call, /*statistics=*/false, outcome, 0, 0);
}

const BatchStats& MpiStatsCombiner::combine_stats(const StepConfig& config, const BatchStats& local,
                                                  const LocalOutcome& outcome) {
  const int64_t C = config.num_features;
  const auto uC = static_cast<std::size_t>(C);
  const std::size_t n = 2 * uC;
  const bool ok = outcome.failure == StepFailure::None;
  exchange_header(config, CallKind::Forward, /*statistics=*/true, outcome, ok ? local.count : 0, n);
  // Every header agrees and no rank failed: every rank has record buffers for the same C.
  store_channels(record_.data(), local.mean, C);
  store_channels(record_.data() + uC, local.m2, C);
  allgather_records(n);

  unpack_parts(stats_parts_, &BatchStats::mean, &BatchStats::m2, gathered_, headers_, size_, C);
  global_stats_ = bn1d::combine_stats(stats_parts_);
  return global_stats_;
}

const GradStats& MpiStatsCombiner::combine_grads(const StepConfig& config, const GradStats& local,
                                                 const LocalOutcome& outcome) {
  const int64_t C = config.num_features;
  const auto uC = static_cast<std::size_t>(C);
  const std::size_t n = 2 * uC;
  const bool ok = outcome.failure == StepFailure::None;
  exchange_header(config, CallKind::Backward, /*statistics=*/true, outcome, ok ? local.count : 0,
                  n);
  store_channels(record_.data(), local.sum_dy, C);
  store_channels(record_.data() + uC, local.sum_dy_xmu, C);
  allgather_records(n);

  unpack_parts(grads_parts_, &GradStats::sum_dy, &GradStats::sum_dy_xmu, gathered_, headers_, size_,
               C);
  global_grads_ = combine_grad_stats(grads_parts_);
  return global_grads_;
}

}  // namespace bn1d
