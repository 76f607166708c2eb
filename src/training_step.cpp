// SPDX-License-Identifier: MIT
// BatchNorm1d's step, shared by every module: validate once, local statistics → combine →
// normalize; backward: local sums → combine → apply. The combiner decides what "global" is (the
// local batch, or every rank's). Results are computed into buffers that are swapped in at the
// end, so a call that throws leaves the module unchanged.
#include <algorithm>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <utility>

#include "bn1d/module.hpp"
#include "channel_values.hpp"
#include "format.hpp"
#include "partition.hpp"
#include "step_workspace.hpp"
#include "steps.hpp"
#include "validate.hpp"
#include "writable.hpp"

namespace bn1d {
namespace {

// The combiner of a module on its own: the local batch is the batch.
class LocalCombiner final : public StatsCombiner {
 public:
  const BatchStats& combine_stats(const StepConfig&, const BatchStats& local,
                                  const LocalOutcome& outcome) override {
    if (outcome.error) std::rethrow_exception(outcome.error);
    return local;
  }
  const GradStats& combine_grads(const StepConfig&, const GradStats& local,
                                 const LocalOutcome& outcome) override {
    if (outcome.error) std::rethrow_exception(outcome.error);
    return local;
  }
  bool local_only() const noexcept override { return true; }
};

LocalCombiner local_combiner;  // stateless: shared by every thread

std::string module_name(const StatsCombiner& combiner, const BatchNorm1dOptions& o) {
  return std::string(combiner.module_name()) + "(" + std::to_string(o.num_features()) + ")";
}

// Whether contiguous @p t holds exactly the bytes of @p copy (a tensor of its sizes and dtype).
bool same_bytes(const Tensor& t, const Tensor& copy) {
  return t.is_contiguous() && copy.defined() && copy.sizes() == t.sizes() &&
         copy.dtype() == t.dtype() &&
         std::memcmp(t.raw_data(), copy.raw_data(),
                     static_cast<std::size_t>(t.numel()) * element_size(t.dtype())) == 0;
}

// Per-channel {C} float64 zeros in @p norm: the normalization of an empty batch.
void zero_normalization(Normalization& norm, int64_t C) {
  detail::reuse_or_allocate(norm.mean, C, DType::Float64);
  detail::reuse_or_allocate(norm.invstd, C, DType::Float64);
  std::fill_n(norm.mean.data<double>(), C, 0.0);
  std::fill_n(norm.invstd.data<double>(), C, 0.0);
}

// Runs this participant's part of a call. A failure is recorded — the stage @p body had reached
// and the exception — instead of thrown, so that the combiner can tell every participant.
template <class Body>
LocalOutcome local_part(Body body) {
  LocalOutcome outcome;
  try {
    body(outcome.failure);
    outcome.failure = StepFailure::None;
  } catch (...) {
    outcome.error = std::current_exception();
  }
  return outcome;
}

}  // namespace

// The module's parameters and buffers, which no result may overlap (a list for a local
// step::Also: an initializer list lives as long as the variable it initializes).
#define STATE_TENSORS(m) \
  { &(m).weight_, &(m).bias_, &(m).running_mean_, &(m).running_var_ }

// The step's access to the module's members.
struct BatchNorm1d::Step {
  // Checks the module's parameters and buffers (the accessors hand out mutable references, so
  // the user may have replaced one).
  static void check_state(const BatchNorm1d& m) {
    const int64_t C = m.options_.num_features();
    const DType dtype = m.options_.dtype();
    if (m.options_.affine()) {
      detail::check_channel_tensor(m.weight_, "weight", C, dtype);
      detail::check_channel_tensor(m.bias_, "bias", C, dtype);
    }
    if (m.options_.track_running_stats()) {
      detail::check_channel_tensor(m.running_mean_, "running_mean", C, dtype);
      detail::check_channel_tensor(m.running_var_, "running_var", C, dtype);
    }
  }

  // The view of a valid input for the module; @p stage names the check that is running.
  static kernels::View3 check_input(const BatchNorm1d& m, const StatsCombiner& combiner,
                                    const Tensor& input, StepFailure& stage) {
    const BatchNorm1dOptions& o = m.options_;
    stage = StepFailure::InvalidInput;
    const kernels::View3 x = detail::input_view(input);
    stage = StepFailure::WrongDtype;
    if (!detail::param_dtype_fits(o.dtype(), input.dtype())) {
      throw Error(module_name(combiner, o) + ": expected a " + dtype_name(o.dtype()) +
                  " input (the module's dtype), got " + dtype_name(input.dtype()) +
                  (detail::is_16bit(o.dtype())
                       ? std::string()
                       : "; bfloat16 and float16 inputs are also accepted (mixed precision)"));
    }
    stage = StepFailure::WrongChannels;
    if (x.C != o.num_features()) {
      throw Error(module_name(combiner, o) + ": expected input with " +
                  std::to_string(o.num_features()) + " channels (num_features), got " +
                  std::to_string(x.C) + " channels");
    }
    stage = StepFailure::InvalidState;
    check_state(m);
    stage = StepFailure::Internal;
    return x;
  }

  static StepConfig config(const BatchNorm1d& m) {
    const BatchNorm1dOptions& o = m.options_;
    return {o.num_features(), o.dtype(),    m.training_, o.track_running_stats(),
            o.affine(),       o.momentum(), o.eps(),     o.fused_activation()};
  }

  // The partition the saved forward normalized over (for backward()).
  static detail::Partition saved_partition(const BatchNorm1d& m) {
    return {m.saved_masked_ ? &m.saved_valid_ : nullptr, m.saved_bounds_};
  }

  // At least @p G per-group buffers in @p v (grown before anything is written).
  template <class T>
  static void ensure_groups(std::vector<T>& v, int64_t G) {
    if (static_cast<int64_t>(v.size()) < G) v.resize(static_cast<std::size_t>(G));
  }

  // Checks that @p part fits @p input and copies it for the commit.
  static void stage_partition(BatchNorm1d& m, const Tensor& input, const detail::Partition& part) {
    m.next_masked_ = part.valid != nullptr;
    if (part.valid != nullptr) {
      part.valid->check_fits(input.sizes());
      m.next_valid_ = *part.valid;
    }
    m.next_bounds_.assign(part.bounds.begin(), part.bounds.end());
  }

  // The batch-statistics checks on the combined counts: more than one value per group (torch's
  // message, with the chunk's size for a chunk), and some valid value in a masked batch.
  static void check_counts(const BatchNorm1d& m, const StatsCombiner& combiner, const Tensor& input,
                           const detail::Partition& part, std::span<const BatchStats> globals) {
    const std::string ranks = combiner.local_only() ? "" : " over all ranks";
    const std::string where = combiner.local_only() ? "" : " on this rank";
    for (std::size_t g = 0; g < globals.size(); ++g) {
      if (globals[g].count != 1) continue;
      Shape sizes = input.sizes();
      if (part.bounds.size() > 1) sizes[0] = part.bounds[g + 1] - part.bounds[g];
      const std::string message = "Expected more than 1 value per channel when training, got ";
      if (part.valid != nullptr)
        throw Error(message + "1 valid value per channel" + ranks + " (input size " +
                    format_shape(sizes) + where + ")");
      if (combiner.local_only()) throw Error(message + "input size " + format_shape(sizes));
      throw Error(message + "1 value per channel over all ranks (input size " +
                  format_shape(sizes) + " on this rank)");
    }
    if (part.valid != nullptr && globals[0].count == 0) {
      throw Error(module_name(combiner, m.options_) +
                  ": expected at least one valid position (lengths or mask) for batch "
                  "statistics, got none" +
                  ranks + " (input size " + format_shape(input.sizes()) + where + ")");
    }
  }

  // Training, or no running statistics: normalize each group with its combined batch
  // statistics (one group but for a GhostBatchNorm1d's chunks, which combine nothing).
  static void forward_batch(BatchNorm1d& m, const Tensor& input, Tensor& output,
                            const detail::Partition& part, StatsCombiner& combiner) {
    kernels::View3 x;
    const int64_t G = part.groups();
    const LocalOutcome outcome = local_part([&](StepFailure& stage) {
      x = check_input(m, combiner, input, stage);
      stage = StepFailure::InvalidInput;
      stage_partition(m, input, part);
      if (m.training_ && m.options_.track_running_stats()) {  // updated in place at the commit
        stage = StepFailure::InvalidState;
        detail::check_writable(m.running_mean_, "running_mean");
        detail::check_writable(m.running_var_, "running_var");
      }
      stage = StepFailure::Internal;
      ensure_groups(m.stats_, G);
      ensure_groups(m.next_norm_, G);
      step::batch_stats({m.stats_.data(), static_cast<std::size_t>(G)}, x, part);
      step::reserve_workspace(x.C, G);
    });
    std::span<const BatchStats> globals;
    if (G == 1) {
      globals = {&combiner.combine_stats(config(m), m.stats_[0], outcome), 1};
    } else {  // chunks: each is its own batch
      if (outcome.error) std::rethrow_exception(outcome.error);
      globals = {m.stats_.data(), static_cast<std::size_t>(G)};
    }
    check_counts(m, combiner, input, part, globals);
    int64_t total = 0;
    for (const BatchStats& s : globals) total += s.count;
    const int64_t C = x.C;
    const step::Also state = STATE_TENSORS(m);
    const bool update = m.training_ && m.options_.track_running_stats() && total > 0;
    if (update && m.num_batches_tracked_ > INT64_MAX - G) {
      throw Error(module_name(combiner, m.options_) +
                  ": num_batches_tracked: expected a count below the int64 maximum to count "
                  "another batch, got " +
                  std::to_string(m.num_batches_tracked_));
    }
    if (total == 0) {  // empty batch: empty output, no state change (torch would count it)
      detail::reuse_or_allocate_like(output, input, {&input}, state);
      for (int64_t g = 0; g < G; ++g) zero_normalization(m.next_norm_[g], C);
      m.saved_input_ = input;  // last step that may throw (only when its sizes grow)
    } else {
      for (int64_t g = 0; g < G; ++g)
        step::normalization_from_batch(m.next_norm_[g], globals[g], m.options_.eps());
      // The output never overlaps an input, parameter or buffer, and is chosen before the saved
      // input (the last step that may throw) is replaced: nothing after it throws.
      detail::reuse_or_allocate_like(output, input, {&input}, state);
      m.saved_input_ = input;
      step::apply(output, input, x, {m.next_norm_.data(), static_cast<std::size_t>(G)}, m.weight_,
                  m.bias_, m.options_.fused_activation(), part, state);
      for (int64_t g = 0; update && g < G; ++g) {  // in group order: the chunk loop's updates
        ++m.num_batches_tracked_;
        const double factor =
            m.options_.momentum().value_or(1.0 / static_cast<double>(m.num_batches_tracked_));
        step::update_running_stats(m.running_mean_, m.running_var_, globals[g], factor);
      }
    }
    commit_forward(m, /*batch_statistics=*/true);
  }

  // Eval mode with running statistics: nothing to combine, but the participants still agree
  // (skipped for a module on its own: no cost on the local path). @p part has no chunks.
  static void forward_running(BatchNorm1d& m, const Tensor& input, Tensor& output,
                              const detail::Partition& part, StatsCombiner& combiner) {
    kernels::View3 x;
    agree(m, combiner, CallKind::Forward, local_part([&](StepFailure& stage) {
            x = check_input(m, combiner, input, stage);
            stage = StepFailure::InvalidInput;
            stage_partition(m, input, part);
            stage = StepFailure::Internal;
            step::reserve_workspace(x.C);
          }));
    const step::Also state = STATE_TENSORS(m);
    if (x.count() == 0) {
      detail::reuse_or_allocate_like(output, input, {&input}, state);
      zero_normalization(m.next_norm_[0], x.C);
      m.saved_input_ = input;
      m.norm_from_running_ = false;
      return commit_forward(m, /*batch_statistics=*/false);
    }
    if (m.norm_from_running_ && same_bytes(m.running_mean_, m.norm_running_mean_) &&
        same_bytes(m.running_var_, m.norm_running_var_)) {  // saved_norm_ is current
      // The output never overlaps an input, parameter or buffer; the saved input is replaced
      // last of the steps that may throw (see forward_batch).
      detail::reuse_or_allocate_like(output, input, {&input}, state);
      m.saved_input_ = input;
      step::apply(output, input, x, {m.saved_norm_.data(), 1}, m.weight_, m.bias_,
                  m.options_.fused_activation(), part, state);
      m.saved_batch_statistics_ = false;
      return commit_partition(m);
    }
    step::normalization_from_running(m.next_norm_[0], m.running_mean_, m.running_var_,
                                     m.options_.eps());
    // invstd is most of a small batch's eval call: keep the running statistics' bytes to see
    // whether the next call may reuse it (docs/tuning.md#eval-normalization-cache). Their
    // buffers are allocated before anything is written.
    m.norm_from_running_ = false;
    const bool cache = m.running_mean_.is_contiguous() && m.running_var_.is_contiguous();
    if (cache) {
      detail::reuse_or_allocate(m.norm_running_mean_, x.C, m.options_.dtype());
      detail::reuse_or_allocate(m.norm_running_var_, x.C, m.options_.dtype());
    }
    detail::reuse_or_allocate_like(output, input, {&input}, state);
    m.saved_input_ = input;
    step::apply(output, input, x, {m.next_norm_.data(), 1}, m.weight_, m.bias_,
                m.options_.fused_activation(), part, state);
    if (cache) {
      m.norm_running_mean_.copy_from(m.running_mean_);  // contiguous, no overlap: a memmove
      m.norm_running_var_.copy_from(m.running_var_);
      m.norm_from_running_ = true;
    }
    commit_forward(m, /*batch_statistics=*/false);
  }

  // A moved-from module refuses every call; the other participants still hear of it, in the
  // collective they are waiting in.
  static void refuse_if_moved_from(const BatchNorm1d& m, StatsCombiner& combiner, CallKind call) {
    if (!m.moved_from_.value) return;
    agree(m, combiner, call, local_part([&](StepFailure& stage) {
            stage = StepFailure::InvalidState;
            m.check_not_moved_from();
          }));
  }

  // For the calls that combine nothing: the other participants still learn of this call and
  // its outcome; then a local failure is raised.
  static void agree(const BatchNorm1d& m, StatsCombiner& combiner, CallKind call,
                    const LocalOutcome& outcome) {
    if (&combiner != &local_combiner) combiner.agree(config(m), call, outcome);
    if (outcome.error) std::rethrow_exception(outcome.error);
  }

  // Installs the forward's partition of the batch.
  static void commit_partition(BatchNorm1d& m) noexcept {
    std::swap(m.saved_valid_, m.next_valid_);
    std::swap(m.saved_masked_, m.next_masked_);
    std::swap(m.saved_bounds_, m.next_bounds_);
  }

  // Installs the forward's normalization and partition (the saved input is already replaced).
  static void commit_forward(BatchNorm1d& m, bool batch_statistics) noexcept {
    std::swap(m.saved_norm_, m.next_norm_);
    commit_partition(m);
    if (batch_statistics) m.norm_from_running_ = false;
    m.saved_batch_statistics_ = batch_statistics;
  }

  // Checks a backward's arguments against the saved forward; @p stage names the check running.
  static void check_backward(const BatchNorm1d& m, const StatsCombiner& combiner,
                             const Tensor& grad_output, StepFailure& stage) {
    stage = StepFailure::NoForward;
    if (!m.saved_input_.defined())
      throw Error(module_name(combiner, m.options_) + ": backward called before forward");
    stage = StepFailure::WrongGradShape;
    detail::check_same_shape(grad_output, "grad_output", m.saved_input_);
    stage = StepFailure::InvalidState;
    check_state(m);
  }

  // After a forward with running statistics: constant mean and variance, nothing to combine,
  // but the participants still agree (skipped for a module on its own).
  static void backward_running(BatchNorm1d& m, const Tensor& grad_output, Gradients& grads,
                               StatsCombiner& combiner) {
    agree(m, combiner, CallKind::Backward, local_part([&](StepFailure& stage) {
            check_backward(m, combiner, grad_output, stage);
            ensure_groups(m.grad_sums_, 1);
          }));
    backward_apply(m, grad_output, grads, {m.grad_sums_.data(), 1}, /*batch_statistics=*/false);
  }

  // After a forward with batch statistics: combine the gradient sums (each chunk's are its own).
  static void backward_batch(BatchNorm1d& m, const Tensor& grad_output, Gradients& grads,
                             StatsCombiner& combiner) {
    const int64_t G = saved_partition(m).groups();
    const LocalOutcome outcome = local_part([&](StepFailure& stage) {
      check_backward(m, combiner, grad_output, stage);
      stage = StepFailure::Internal;
      ensure_groups(m.grad_sums_, G);
      step::reserve_workspace(m.options_.num_features(), G);
      local_sums(m, grad_output);
    });
    if (G == 1) {
      const GradStats& global = combiner.combine_grads(config(m), m.grad_sums_[0], outcome);
      return backward_apply(m, grad_output, grads, {&global, 1}, /*batch_statistics=*/true);
    }
    if (outcome.error) std::rethrow_exception(outcome.error);
    backward_apply(m, grad_output, grads, {m.grad_sums_.data(), static_cast<std::size_t>(G)},
                   /*batch_statistics=*/true);
  }

  static void local_sums(BatchNorm1d& m, const Tensor& grad_output) {
    const detail::Partition part = saved_partition(m);
    const kernels::View3 dy = detail::input_view(grad_output, "grad_output");
    const kernels::View3 x = detail::input_view(m.saved_input_);
    const auto G = static_cast<std::size_t>(part.groups());
    step::backward_sums({m.grad_sums_.data(), G}, dy, x, {m.saved_norm_.data(), G}, m.weight_,
                        m.bias_, m.options_.fused_activation(), part);
  }

  // grad_input from the @p global sums; weight and bias gradients from the local ones. Every
  // result is chosen first — overlapping no input (grad_output, the saved input), no parameter or
  // buffer of the module and no other result — so that nothing is written before the last step
  // that may throw, and no result is written before an input it overlaps is read.
  static void backward_apply(BatchNorm1d& m, const Tensor& grad_output, Gradients& grads,
                             std::span<const GradStats> global, bool batch_statistics) {
    const kernels::View3 x = detail::input_view(m.saved_input_);
    const kernels::View3 dy = detail::input_view(grad_output, "grad_output");
    const detail::Partition part = saved_partition(m);
    const auto G = static_cast<std::size_t>(part.groups());
    const step::Also state = STATE_TENSORS(m);
    const bool affine = m.options_.affine();
    step::reserve_workspace(x.C, part.groups());
    if (affine && !batch_statistics) local_sums(m, grad_output);
    detail::reuse_or_allocate_like(grads.input, m.saved_input_,
                                   {&m.saved_input_, &grad_output, &grads.weight, &grads.bias},
                                   state);
    if (affine) {
      step::backward_params_results(grads, m.grad_sums_[0], m.saved_norm_[0], m.options_.dtype(),
                                    {&m.saved_input_, &grad_output, &grads.input, &m.weight_,
                                     &m.bias_, &m.running_mean_, &m.running_var_});
    }
    step::backward_input(grads.input, grad_output, m.saved_input_, dy, x, {m.saved_norm_.data(), G},
                         m.weight_, m.bias_, m.options_.fused_activation(), global,
                         batch_statistics, part, {&grads.weight, &grads.bias});
    if (affine) {
      step::backward_params(grads, {m.grad_sums_.data(), G}, {m.saved_norm_.data(), G},
                            m.options_.dtype(),
                            {&m.saved_input_, &grad_output, &grads.input, &m.weight_, &m.bias_,
                             &m.running_mean_, &m.running_var_});
    } else {
      grads.weight = Tensor();
      grads.bias = Tensor();
    }
  }

  // infer(): the batch statistics of each group of @p part (without running statistics) or the
  // running statistics, into the calling thread's workspace.
  static void infer(const BatchNorm1d& m, const Tensor& input, Tensor& output,
                    const detail::Partition& part) {
    m.check_not_moved_from();
    StepFailure stage;
    const kernels::View3 x = check_input(m, local_combiner, input, stage);
    if (part.valid != nullptr) part.valid->check_fits(input.sizes());
    const bool batch_statistics = !m.options_.track_running_stats();
    const step::Also state = STATE_TENSORS(m);
    // Per-thread statistics: concurrent calls share nothing but the module's read-only tensors.
    detail::StepWorkspace& ws = detail::thread_workspace();
    const int64_t G = batch_statistics ? part.groups() : 1;
    ensure_groups(ws.infer_stats, G);
    ensure_groups(ws.infer_norms, G);
    if (batch_statistics) {
      step::batch_stats({ws.infer_stats.data(), static_cast<std::size_t>(G)}, x, part);
      check_counts(m, local_combiner, input, part, {ws.infer_stats.data(), std::size_t(G)});
    }
    if (x.count() == 0) return detail::reuse_or_allocate_like(output, input, {&input}, state);
    if (batch_statistics) {
      for (int64_t g = 0; g < G; ++g)
        step::normalization_from_batch(ws.infer_norms[g], ws.infer_stats[g], m.options_.eps());
    } else {
      step::normalization_from_running(ws.infer_norms[0], m.running_mean_, m.running_var_,
                                       m.options_.eps());
    }
    step::apply(output, input, x, {ws.infer_norms.data(), static_cast<std::size_t>(G)}, m.weight_,
                m.bias_, m.options_.fused_activation(),
                batch_statistics ? part : part.positions_only(), state);
  }
};

void BatchNorm1d::forward(const Tensor& input, Tensor& output) {
  forward(input, output, detail::Partition{}, local_combiner);
}

void BatchNorm1d::forward(const Tensor& input, Tensor& output, StatsCombiner& combiner) {
  forward(input, output, detail::Partition{}, combiner);
}

void BatchNorm1d::forward(const Tensor& input, Tensor& output, const detail::Partition& part) {
  forward(input, output, part, local_combiner);
}

void BatchNorm1d::forward(const Tensor& input, Tensor& output, const detail::Partition& part,
                          StatsCombiner& combiner) {
  Step::refuse_if_moved_from(*this, combiner, CallKind::Forward);
  if (training_ || !options_.track_running_stats())
    Step::forward_batch(*this, input, output, part, combiner);
  else
    Step::forward_running(*this, input, output, part.positions_only(), combiner);
}

void BatchNorm1d::forward(const Tensor& input, Tensor& output, const ValidPositions& valid,
                          StatsCombiner& combiner) {
  forward(input, output, detail::Partition{&valid, {}}, combiner);
}

void BatchNorm1d::forward(const Tensor& input, Tensor& output, const ValidPositions& valid) {
  forward(input, output, valid, local_combiner);
}

Tensor BatchNorm1d::forward(const Tensor& input) {
  Tensor output;
  forward(input, output);
  return output;
}

Tensor BatchNorm1d::forward(const Tensor& input, const ValidPositions& valid) {
  Tensor output;
  forward(input, output, valid);
  return output;
}

void BatchNorm1d::backward(const Tensor& grad_output, Gradients& grads) {
  backward(grad_output, grads, local_combiner);
}

void BatchNorm1d::backward(const Tensor& grad_output, Gradients& grads, StatsCombiner& combiner) {
  Step::refuse_if_moved_from(*this, combiner, CallKind::Backward);
  // Before any forward, the current mode says whether the other participants combine.
  const bool batch_statistics = saved_input_.defined()
                                    ? saved_batch_statistics_
                                    : training_ || !options_.track_running_stats();
  if (batch_statistics)
    Step::backward_batch(*this, grad_output, grads, combiner);
  else
    Step::backward_running(*this, grad_output, grads, combiner);
}

BatchNorm1d::Gradients BatchNorm1d::backward(const Tensor& grad_output) {
  Gradients grads;
  backward(grad_output, grads);
  return grads;
}

void BatchNorm1d::infer(const Tensor& input, Tensor& output, const detail::Partition& part) const {
  Step::infer(*this, input, output, part);
}

void BatchNorm1d::infer(const Tensor& input, Tensor& output) const {
  infer(input, output, detail::Partition{});
}

void BatchNorm1d::infer(const Tensor& input, Tensor& output, const ValidPositions& valid) const {
  infer(input, output, detail::Partition{&valid, {}});
}

Tensor BatchNorm1d::infer(const Tensor& input) const {
  Tensor output;
  infer(input, output);
  return output;
}

Tensor BatchNorm1d::infer(const Tensor& input, const ValidPositions& valid) const {
  Tensor output;
  infer(input, output, valid);
  return output;
}

}  // namespace bn1d
