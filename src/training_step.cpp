// SPDX-License-Identifier: MIT
// BatchNorm1d's step, shared by every module: validate once, local statistics → combine →
// normalize; backward: local sums → combine → apply. The combiner decides what "global" is (the
// local batch, or every rank's). Results are computed into buffers that are swapped in at the
// end, so a call that throws leaves the module unchanged.
#include <algorithm>
#include <cstring>
#include <exception>
#include <utility>

#include "bn1d/module.hpp"
#include "channel_values.hpp"
#include "format.hpp"
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
            o.affine(),       o.momentum(), o.eps()};
  }

  // Training, or no running statistics: normalize with the combined batch statistics.
  static void forward_batch(BatchNorm1d& m, const Tensor& input, Tensor& output,
                            StatsCombiner& combiner) {
    kernels::View3 x;
    const LocalOutcome outcome = local_part([&](StepFailure& stage) {
      x = check_input(m, combiner, input, stage);
      if (m.training_ && m.options_.track_running_stats()) {  // updated in place at the commit
        stage = StepFailure::InvalidState;
        detail::check_writable(m.running_mean_, "running_mean");
        detail::check_writable(m.running_var_, "running_var");
        stage = StepFailure::Internal;
      }
      step::batch_stats(m.stats_, x);
      step::reserve_workspace(x.C);
    });
    const BatchStats& global = combiner.combine_stats(config(m), m.stats_, outcome);
    if (global.count == 1) {
      throw Error(combiner.local_only()
                      ? "Expected more than 1 value per channel when training, got input size " +
                            format_shape(input.sizes())
                      : "Expected more than 1 value per channel when training, got 1 value per "
                        "channel over all ranks (input size " +
                            format_shape(input.sizes()) + " on this rank)");
    }
    const int64_t C = x.C;
    const step::Also state = STATE_TENSORS(m);
    const bool update = m.training_ && m.options_.track_running_stats() && global.count > 0;
    if (update && m.num_batches_tracked_ == INT64_MAX) {
      throw Error(module_name(combiner, m.options_) +
                  ": num_batches_tracked: expected a count below the int64 maximum to count "
                  "another batch, got " +
                  std::to_string(m.num_batches_tracked_));
    }
    if (global.count == 0) {  // empty batch: empty output, no state change (torch would count it)
      detail::reuse_or_allocate_like(output, input, {&input}, state);
      zero_normalization(m.next_norm_, C);
      m.saved_input_ = input;  // last step that may throw (only when its sizes grow)
    } else {
      step::normalization_from_batch(m.next_norm_, global, m.options_.eps());
      // The output never overlaps an input, parameter or buffer, and is chosen before the saved
      // input (the last step that may throw) is replaced: nothing after it throws.
      detail::reuse_or_allocate_like(output, input, {&input}, state);
      m.saved_input_ = input;
      step::apply(output, input, x, m.next_norm_, m.weight_, m.bias_, state);
      if (update) {
        ++m.num_batches_tracked_;
        const double factor =
            m.options_.momentum().value_or(1.0 / static_cast<double>(m.num_batches_tracked_));
        step::update_running_stats(m.running_mean_, m.running_var_, global, factor);
      }
    }
    commit_forward(m, /*batch_statistics=*/true);
  }

  // Eval mode with running statistics: nothing to combine, but the participants still agree
  // (skipped for a module on its own: no cost on the local path).
  static void forward_running(BatchNorm1d& m, const Tensor& input, Tensor& output,
                              StatsCombiner& combiner) {
    kernels::View3 x;
    agree(m, combiner, CallKind::Forward, local_part([&](StepFailure& stage) {
            x = check_input(m, combiner, input, stage);
            step::reserve_workspace(x.C);
          }));
    const step::Also state = STATE_TENSORS(m);
    if (x.count() == 0) {
      detail::reuse_or_allocate_like(output, input, {&input}, state);
      zero_normalization(m.next_norm_, x.C);
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
      step::apply(output, input, x, m.saved_norm_, m.weight_, m.bias_, state);
      m.saved_batch_statistics_ = false;
      return;
    }
    step::normalization_from_running(m.next_norm_, m.running_mean_, m.running_var_,
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
    step::apply(output, input, x, m.next_norm_, m.weight_, m.bias_, state);
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

  // Installs the forward's normalization (the saved input is already replaced).
  static void commit_forward(BatchNorm1d& m, bool batch_statistics) noexcept {
    std::swap(m.saved_norm_, m.next_norm_);
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
    agree(m, combiner, CallKind::Backward,
          local_part([&](StepFailure& stage) { check_backward(m, combiner, grad_output, stage); }));
    backward_apply(m, grad_output, grads, m.grad_sums_, /*batch_statistics=*/false);
  }

  // After a forward with batch statistics: combine the gradient sums.
  static void backward_batch(BatchNorm1d& m, const Tensor& grad_output, Gradients& grads,
                             StatsCombiner& combiner) {
    const LocalOutcome outcome = local_part([&](StepFailure& stage) {
      check_backward(m, combiner, grad_output, stage);
      stage = StepFailure::Internal;
      local_sums(m, grad_output);
    });
    const GradStats& global = combiner.combine_grads(config(m), m.grad_sums_, outcome);
    backward_apply(m, grad_output, grads, global, /*batch_statistics=*/true);
  }

  static void local_sums(BatchNorm1d& m, const Tensor& grad_output) {
    step::backward_sums(m.grad_sums_, detail::input_view(grad_output, "grad_output"),
                        detail::input_view(m.saved_input_), m.saved_norm_);
  }

  // grad_input from the @p global sums; weight and bias gradients from the local ones. Every
  // result is chosen first — overlapping no input (grad_output, the saved input), no parameter or
  // buffer of the module and no other result — so that nothing is written before the last step
  // that may throw, and no result is written before an input it overlaps is read.
  static void backward_apply(BatchNorm1d& m, const Tensor& grad_output, Gradients& grads,
                             const GradStats& global, bool batch_statistics) {
    const kernels::View3 x = detail::input_view(m.saved_input_);
    const kernels::View3 dy = detail::input_view(grad_output, "grad_output");
    const step::Also state = STATE_TENSORS(m);
    const bool affine = m.options_.affine();
    step::reserve_workspace(x.C);
    if (affine && !batch_statistics) local_sums(m, grad_output);
    detail::reuse_or_allocate_like(grads.input, m.saved_input_,
                                   {&m.saved_input_, &grad_output, &grads.weight, &grads.bias},
                                   state);
    if (affine) {
      step::backward_params_results(grads, m.grad_sums_, m.saved_norm_, m.options_.dtype(),
                                    {&m.saved_input_, &grad_output, &grads.input, &m.weight_,
                                     &m.bias_, &m.running_mean_, &m.running_var_});
    }
    step::backward_input(grads.input, grad_output, m.saved_input_, dy, x, m.saved_norm_, m.weight_,
                         global, batch_statistics, {&grads.weight, &grads.bias});
    if (affine) {
      step::backward_params(grads, m.grad_sums_, m.saved_norm_, m.options_.dtype(),
                            {&m.saved_input_, &grad_output, &grads.input, &m.weight_, &m.bias_,
                             &m.running_mean_, &m.running_var_});
    } else {
      grads.weight = Tensor();
      grads.bias = Tensor();
    }
  }
};

void BatchNorm1d::forward(const Tensor& input, Tensor& output) {
  forward(input, output, local_combiner);
}

void BatchNorm1d::forward(const Tensor& input, Tensor& output, StatsCombiner& combiner) {
  Step::refuse_if_moved_from(*this, combiner, CallKind::Forward);
  if (training_ || !options_.track_running_stats())
    Step::forward_batch(*this, input, output, combiner);
  else
    Step::forward_running(*this, input, output, combiner);
}

Tensor BatchNorm1d::forward(const Tensor& input) {
  Tensor output;
  forward(input, output);
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

void BatchNorm1d::infer(const Tensor& input, Tensor& output) const {
  check_not_moved_from();
  StepFailure stage;
  const kernels::View3 x = Step::check_input(*this, local_combiner, input, stage);
  const bool batch_statistics = !options_.track_running_stats();
  if (batch_statistics) detail::check_batch_size(x, input.sizes());
  const step::Also state = STATE_TENSORS(*this);
  if (x.count() == 0) return detail::reuse_or_allocate_like(output, input, {&input}, state);
  // Per-thread statistics: concurrent calls share nothing but the module's read-only tensors.
  detail::StepWorkspace& ws = detail::thread_workspace();
  if (batch_statistics) {
    step::batch_stats(ws.infer_stats, x);
    step::normalization_from_batch(ws.infer_norm, ws.infer_stats, options_.eps());
  } else {
    step::normalization_from_running(ws.infer_norm, running_mean_, running_var_, options_.eps());
  }
  step::apply(output, input, x, ws.infer_norm, weight_, bias_, state);
}

Tensor BatchNorm1d::infer(const Tensor& input) const {
  Tensor output;
  infer(input, output);
  return output;
}

}  // namespace bn1d
