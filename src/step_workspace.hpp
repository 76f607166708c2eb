// SPDX-License-Identifier: MIT
// The per-thread scratch of the functional steps: per-channel float64 arrays with names, grown
// when needed and kept between calls, so that steady-state calls allocate nothing.
#pragma once

#include <cstddef>
#include <vector>

#include "bn1d/batch_norm.hpp"

namespace bn1d::detail {

/// Scratch of the calling thread. Each buffer belongs to one step; a step never calls another
/// step that uses the same buffer.
struct StepWorkspace {
  std::vector<double> weight;        ///< weight as float64 (batch_norm_apply, backward_input)
  std::vector<double> bias;          ///< bias as float64, or zeros without one
  std::vector<double> scale;         ///< weight · invstd (batch_norm_apply)
  std::vector<double> running_mean;  ///< running statistics as float64 (their update)
  std::vector<double> running_var;   ///< running_var as float64 (update, normalization)
  std::vector<double> coef_a;        ///< backward_input: dx = a · dy + b · (x − mean) + k
  std::vector<double> coef_b;
  std::vector<double> coef_k;
  std::vector<double> grad_weight;      ///< Σ dy · (x − mean) · invstd before its rounding
  std::vector<double> block_a;          ///< one block's or group's per-channel results before they
  std::vector<double> block_b;          ///< are merged (route_groups.cpp, backward_params)
  std::vector<float> valid_f32;         ///< valid positions as the masked kernels read them
  std::vector<double> valid_f64;        ///< (route_groups.cpp), for float32 or other inputs
  GradStats grad_sums;                  ///< batch_norm_backward's sums of the local batch
  std::vector<BatchStats> infer_stats;  ///< BatchNorm1d::infer's batch statistics per group
  std::vector<Normalization> infer_norms;  ///< BatchNorm1d::infer's normalization per group
};

/// The calling thread's workspace.
StepWorkspace& thread_workspace();

/// @p buffer grown to at least @p n values; returns its data.
inline double* sized(std::vector<double>& buffer, std::size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace bn1d::detail
