// SPDX-License-Identifier: MIT
// SyncBatchNorm1d: BatchNorm1d with batch statistics over all ranks of an MPI communicator.
// Parameters, buffers and the eval path live in a BatchNorm1d member; the synchronized passes
// run the functional steps with one MPI_Allgather each. Every rank validates locally, reports
// the outcome in its record and takes part in the collective, so that an error on one rank makes
// every rank throw instead of leaving the others blocked.
#include "bn1d/dist/sync_batch_norm.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
#include <ostream>
#include <utility>

#include "channel_values.hpp"
#include "format.hpp"
#include "options_repr.hpp"
#include "validate.hpp"
#include "writable.hpp"

namespace bn1d {
namespace {

// Status codes of a rank's record.
enum Status : int {
  kOk = 0,
  kInvalidInput = 1,
  kWrongChannels = 2,
  kWrongDtype = 3,
  kInvalidState = 4,
  kNoForward = 5,
  kWrongGradShape = 6,
  kInternal = 7,
};

const char* status_reason(int status) {
  switch (status) {
    case kInvalidInput:
      return "it reported an invalid input (expected a 2-D or 3-D float32/float64 tensor)";
    case kWrongChannels:
      return "input with the wrong channel count";
    case kWrongDtype:
      return "input of the wrong dtype";
    case kInvalidState:
      return "invalid module parameters or buffers";
    case kNoForward:
      return "backward called before forward";
    case kWrongGradShape:
      return "grad_output of the wrong shape";
    default:
      return "internal error";
  }
}

// Forward record: header, then mean[C], M2[C].
constexpr std::size_t kForwardHeader = 7;
enum ForwardField : std::size_t { fStatus, fCount, fChannels, fDtype, fMode, fMomentum, fEps };
// Backward record: header, then Σdy[C], Σdy·(x − mean)[C].
constexpr std::size_t kBackwardHeader = 3;
enum BackwardField : std::size_t { bStatus, bCount, bChannels };

std::string name_of(const BatchNorm1dOptions& o) {
  return "SyncBatchNorm1d(" + std::to_string(o.num_features()) + ")";
}

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

void copy_channels(Tensor& dst, const double* src, int64_t C) {
  detail::reuse_or_allocate(dst, C, DType::Float64);
  std::memcpy(dst.data<double>(), src, static_cast<std::size_t>(C) * sizeof(double));
}

void store_channels(double* dst, const Tensor& src, int64_t C) {
  std::memcpy(dst, src.data<double>(), static_cast<std::size_t>(C) * sizeof(double));
}

// Throws on every rank when a record reports an error: the failing rank's own message on that
// rank, "rank R failed" on the others.
void raise_errors(const std::vector<double>& gathered, std::size_t n, int size, int own_status,
                  const std::string& own_message) {
  if (own_status != kOk) throw Error(own_message);
  for (int r = 0; r < size; ++r) {
    const int status = static_cast<int>(gathered[static_cast<std::size_t>(r) * n]);
    if (status != kOk) {
      throw Error("SyncBatchNorm1d: rank " + std::to_string(r) +
                  " failed: " + status_reason(status));
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
      throw Error(std::string("SyncBatchNorm1d: ranks disagree on ") + what +
                  " (rank 0: " + python_float_repr(first) + ", rank " + std::to_string(r) + ": " +
                  python_float_repr(value) + ")");
    }
  }
}

}  // namespace

SyncBatchNorm1d::SyncBatchNorm1d(int64_t num_features, MPI_Comm comm)
    : SyncBatchNorm1d(BatchNorm1dOptions(num_features), comm) {}

SyncBatchNorm1d::SyncBatchNorm1d(const BatchNorm1dOptions& options, MPI_Comm comm)
    : module_(options) {
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

SyncBatchNorm1d::SyncBatchNorm1d(SyncBatchNorm1d&& other) noexcept
    : module_(std::move(other.module_)),
      comm_(std::exchange(other.comm_, MPI_COMM_NULL)),
      rank_(other.rank_),
      size_(other.size_),
      num_batches_tracked_(other.num_batches_tracked_),
      saved_(other.saved_),
      saved_sync_(other.saved_sync_),
      saved_global_count_(other.saved_global_count_),
      saved_input_(std::move(other.saved_input_)),
      saved_norm_(std::move(other.saved_norm_)) {
  other.saved_ = false;
}

SyncBatchNorm1d& SyncBatchNorm1d::operator=(SyncBatchNorm1d&& other) noexcept {
  if (this != &other) {
    release();
    module_ = std::move(other.module_);
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    rank_ = other.rank_;
    size_ = other.size_;
    num_batches_tracked_ = other.num_batches_tracked_;
    saved_ = std::exchange(other.saved_, false);
    saved_sync_ = other.saved_sync_;
    saved_global_count_ = other.saved_global_count_;
    saved_input_ = std::move(other.saved_input_);
    saved_norm_ = std::move(other.saved_norm_);
  }
  return *this;
}

SyncBatchNorm1d::~SyncBatchNorm1d() { release(); }

void SyncBatchNorm1d::release() noexcept {
  if (comm_ == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&comm_);
  comm_ = MPI_COMM_NULL;
}

std::size_t SyncBatchNorm1d::forward_record_bytes(int64_t num_features) noexcept {
  return (kForwardHeader + 2 * static_cast<std::size_t>(num_features)) * sizeof(double);
}

std::size_t SyncBatchNorm1d::backward_record_bytes(int64_t num_features) noexcept {
  return (kBackwardHeader + 2 * static_cast<std::size_t>(num_features)) * sizeof(double);
}

void SyncBatchNorm1d::allgather(const std::vector<double>& local, std::size_t n) {
  gathered_.resize(n * static_cast<std::size_t>(size_));
  if (size_ == 1) {
    std::copy(local.begin(), local.begin() + static_cast<std::ptrdiff_t>(n), gathered_.begin());
    return;
  }
  if (comm_ == MPI_COMM_NULL) throw Error("SyncBatchNorm1d: use of a moved-from module");
  check_mpi(MPI_Allgather(local.data(), static_cast<int>(n), MPI_DOUBLE, gathered_.data(),
                          static_cast<int>(n), MPI_DOUBLE, comm_),
            "MPI_Allgather");
}

Tensor SyncBatchNorm1d::forward(const Tensor& input) {
  Tensor output;
  forward(input, output);
  return output;
}

void SyncBatchNorm1d::forward(const Tensor& input, Tensor& output) {
  const bool batch_statistics = is_training() || !options().track_running_stats();
  if (batch_statistics) {
    sync_forward(input, output);
    return;
  }
  module_.forward(input, output);  // eval with running statistics: local, no collective
  saved_ = true;
  saved_sync_ = false;
  saved_input_ = Tensor();
}

void SyncBatchNorm1d::sync_forward(const Tensor& input, Tensor& output) {
  const BatchNorm1dOptions& o = options();
  const int64_t C = o.num_features();
  const std::size_t n = record_size(kForwardHeader, C);
  const auto uC = static_cast<std::size_t>(C);

  // 1. Local validation and statistics; failures go into the record, not out of the function.
  int status = kOk;
  std::string message;
  int stage = kInvalidInput;
  try {
    const kernels::View3 x = detail::input_view(input);
    stage = kWrongDtype;
    if (input.dtype() != o.dtype()) {
      throw Error(name_of(o) + ": expected a " + dtype_name(o.dtype()) +
                  " input (the module's dtype), got " + dtype_name(input.dtype()));
    }
    stage = kWrongChannels;
    if (x.C != C) {
      throw Error(name_of(o) + ": expected input with " + std::to_string(C) +
                  " channels (num_features), got " + std::to_string(x.C) + " channels");
    }
    stage = kInvalidState;
    if (o.affine()) {
      detail::check_channel_tensor(weight(), "weight", C, o.dtype());
      detail::check_channel_tensor(bias(), "bias", C, o.dtype());
    }
    if (o.track_running_stats()) {
      detail::check_channel_tensor(running_mean(), "running_mean", C, o.dtype());
      detail::check_channel_tensor(running_var(), "running_var", C, o.dtype());
      if (is_training()) {  // updated in place at the commit
        detail::check_writable(running_mean(), "running_mean");
        detail::check_writable(running_var(), "running_var");
      }
    }
    stage = kInternal;
    batch_stats(local_stats_, input);
  } catch (const std::exception& e) {
    status = stage;
    message = e.what();
  }

  record_.assign(n, 0.0);
  record_[fStatus] = status;
  record_[fChannels] = static_cast<double>(C);
  record_[fDtype] = o.dtype() == DType::Float64 ? 1.0 : 0.0;
  record_[fMode] = (is_training() ? 1.0 : 0.0) + (o.track_running_stats() ? 2.0 : 0.0) +
                   (o.affine() ? 4.0 : 0.0);
  record_[fMomentum] = o.momentum().value_or(-1.0);
  record_[fEps] = o.eps();
  if (status == kOk) {
    record_[fCount] = static_cast<double>(local_stats_.count);
    store_channels(record_.data() + kForwardHeader, local_stats_.mean, C);
    store_channels(record_.data() + kForwardHeader + uC, local_stats_.m2, C);
  }

  // 2. The one collective, then identical decisions on every rank.
  allgather(record_, n);
  raise_errors(gathered_, n, size_, status, message);
  check_agreement(gathered_, n, size_, fChannels, "num_features");
  check_agreement(gathered_, n, size_, fDtype, "the dtype (0 float32, 1 float64)");
  check_agreement(gathered_, n, size_, fMode,
                  "the mode (1 training + 2 track_running_stats + 4 affine)");
  check_agreement(gathered_, n, size_, fMomentum, "momentum (-1 for None)");
  check_agreement(gathered_, n, size_, fEps, "eps");

  parts_.resize(static_cast<std::size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    const double* rec = gathered_.data() + static_cast<std::size_t>(r) * n;
    BatchStats& p = parts_[static_cast<std::size_t>(r)];
    p.count = static_cast<int64_t>(rec[fCount]);
    copy_channels(p.mean, rec + kForwardHeader, C);
    copy_channels(p.m2, rec + kForwardHeader + uC, C);
  }
  const BatchStats global = combine_stats(parts_);
  if (global.count == 1) {
    throw Error(
        "Expected more than 1 value per channel when training, got 1 value per channel over all "
        "ranks (input size " +
        format_shape(input.sizes()) + " on this rank)");
  }

  // 3. Commit: nothing below throws for valid arguments.
  if (global.count == 0) {
    // Empty global batch: empty output, no state change (as BatchNorm1d).
    detail::reuse_or_allocate(output, input.sizes(), input.dtype());
    detail::reuse_or_allocate(saved_norm_.mean, C, DType::Float64);
    detail::reuse_or_allocate(saved_norm_.invstd, C, DType::Float64);
    std::fill_n(saved_norm_.mean.data<double>(), C, 0.0);
    std::fill_n(saved_norm_.invstd.data<double>(), C, 0.0);
  } else {
    normalization_from_batch(saved_norm_, global, o.eps());
    batch_norm_apply(output, input, saved_norm_, weight(), bias());
    if (is_training() && o.track_running_stats()) {
      ++num_batches_tracked_;
      const double factor = o.momentum().value_or(1.0 / static_cast<double>(num_batches_tracked_));
      update_running_stats(running_mean(), running_var(), global, factor);
    }
  }
  saved_ = true;
  saved_sync_ = true;
  saved_global_count_ = global.count;
  saved_input_ = input;
}

SyncBatchNorm1d::Gradients SyncBatchNorm1d::backward(const Tensor& grad_output) {
  Gradients grads;
  backward(grad_output, grads);
  return grads;
}

void SyncBatchNorm1d::backward(const Tensor& grad_output, Gradients& grads) {
  // Before any forward, the current mode says whether the other ranks take the collective.
  const bool sync = saved_ ? saved_sync_ : (is_training() || !options().track_running_stats());
  if (!sync) {
    module_.backward(grad_output, grads);  // running statistics: local, no collective
    return;
  }
  sync_backward(grad_output, grads);
}

void SyncBatchNorm1d::sync_backward(const Tensor& grad_output, Gradients& grads) {
  const BatchNorm1dOptions& o = options();
  const int64_t C = o.num_features();
  const std::size_t n = record_size(kBackwardHeader, C);
  const auto uC = static_cast<std::size_t>(C);

  int status = kOk;
  std::string message;
  int stage = kNoForward;
  try {
    if (!saved_) throw Error(name_of(o) + ": backward called before forward");
    stage = kWrongGradShape;
    detail::check_same_shape(grad_output, "grad_output", saved_input_);
    stage = kInvalidState;
    if (o.affine()) detail::check_channel_tensor(weight(), "weight", C, o.dtype());
    stage = kInternal;
    backward_stats(local_grad_, grad_output, saved_input_, saved_norm_);
  } catch (const std::exception& e) {
    status = stage;
    message = e.what();
  }

  record_.assign(n, 0.0);
  record_[bStatus] = status;
  record_[bChannels] = static_cast<double>(C);
  if (status == kOk) {
    record_[bCount] = static_cast<double>(local_grad_.count);
    store_channels(record_.data() + kBackwardHeader, local_grad_.sum_dy, C);
    store_channels(record_.data() + kBackwardHeader + uC, local_grad_.sum_dy_xmu, C);
  }

  allgather(record_, n);
  raise_errors(gathered_, n, size_, status, message);
  check_agreement(gathered_, n, size_, bChannels, "num_features");

  grad_parts_.resize(static_cast<std::size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    const double* rec = gathered_.data() + static_cast<std::size_t>(r) * n;
    GradStats& p = grad_parts_[static_cast<std::size_t>(r)];
    p.count = static_cast<int64_t>(rec[bCount]);
    copy_channels(p.sum_dy, rec + kBackwardHeader, C);
    copy_channels(p.sum_dy_xmu, rec + kBackwardHeader + uC, C);
  }
  const GradStats global = combine_grad_stats(grad_parts_);

  batch_norm_backward_input(grads.input, grad_output, saved_input_, saved_norm_, weight(), global,
                            /*batch_statistics=*/true);
  if (o.affine()) {
    // Local parameter gradients: the data-parallel optimizer sums them across ranks.
    batch_norm_backward_params(grads, local_grad_, saved_norm_, o.dtype());
  } else {
    grads.weight = Tensor();
    grads.bias = Tensor();
  }
}

void SyncBatchNorm1d::reset_running_stats() {
  module_.reset_running_stats();
  num_batches_tracked_ = 0;
}

void SyncBatchNorm1d::reset_parameters() {
  module_.reset_parameters();
  num_batches_tracked_ = 0;
}

StateDict SyncBatchNorm1d::state_dict() const {
  StateDict state = module_.state_dict();
  if (options().track_running_stats()) {
    Tensor count = Tensor::empty({}, DType::Int64);
    *count.data<int64_t>() = num_batches_tracked_;
    state.insert("num_batches_tracked", count);
  }
  return state;
}

void SyncBatchNorm1d::load_state_dict(const StateDict& state, bool strict) {
  module_.load_state_dict(state, strict);
  num_batches_tracked_ = module_.num_batches_tracked();
}

void SyncBatchNorm1d::save(const std::string& path) const { save_safetensors(path, state_dict()); }

void SyncBatchNorm1d::load(const std::string& path, const std::string& prefix) {
  module_.load(path, prefix);
  num_batches_tracked_ = module_.num_batches_tracked();
}

std::ostream& operator<<(std::ostream& os, const SyncBatchNorm1d& module) {
  return detail::write_options(os << "SyncBatchNorm1d", module.options());
}

}  // namespace bn1d
