// SPDX-License-Identifier: MIT
// bn1d's functional API for Python (bn1d.functional): torch.nn.functional.batch_norm and the
// separable steps of one training step (batch statistics, combine, normalize, backward sums,
// backward apply), which distributed and adapter code composes. Statistics travel as tuples of
// numpy arrays (float64 {C}); the Python layer names them (BatchStats, GradStats,
// Normalization) and checks the arguments' types. No math happens here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bn1d/bn1d.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "module_binding.hpp"
#include "numpy_tensor.hpp"

namespace bn1d_python {

namespace {

// An optional argument: its bn1d view, undefined for None.
bn1d::Tensor optional_tensor(const py::object& x, const char* name, bool writable) {
  if (x.is_none()) return bn1d::Tensor();
  return writable ? writable_tensor_of(x, name) : tensor_of(x, name);
}

// The fused activation named @p name ("none", "relu", "leaky_relu") with @p negative_slope.
bn1d::FusedActivation fused_activation(const std::string& name, double negative_slope) {
  return {parse_activation(name), negative_slope};
}

// The valid positions of lengths or mask (both None: nullopt).
std::optional<bn1d::ValidPositions> maybe_valid(const py::object& lengths, const py::object& mask) {
  if (lengths.is_none() && mask.is_none()) return std::nullopt;
  return valid_positions(lengths, mask);
}

// The result of @p compute, run without the GIL (the Python objects it reads stay alive).
template <class Compute>
auto without_gil(Compute&& compute) {
  py::gil_scoped_release nogil;
  return compute();
}

// (count, mean, m2) <-> BatchStats, (count, sum_dy, sum_dy_xmu) <-> GradStats, (mean, invstd)
// <-> Normalization. The tensors are views of the arrays, which the caller keeps alive.
bn1d::BatchStats batch_stats_of(const py::tuple& t) {
  return {t[0].cast<int64_t>(), tensor_of(t[1], "stats.mean"), tensor_of(t[2], "stats.m2")};
}
bn1d::GradStats grad_stats_of(const py::tuple& t) {
  return {t[0].cast<int64_t>(), tensor_of(t[1], "stats.sum_dy"),
          tensor_of(t[2], "stats.sum_dy_xmu")};
}
bn1d::Normalization normalization_of(const py::tuple& t) {
  return {tensor_of(t[0], "norm.mean"), tensor_of(t[1], "norm.invstd")};
}
py::tuple as_tuple(const bn1d::BatchStats& s) {
  return py::make_tuple(s.count, to_numpy(s.mean), to_numpy(s.m2));
}
py::tuple as_tuple(const bn1d::GradStats& s) {
  return py::make_tuple(s.count, to_numpy(s.sum_dy), to_numpy(s.sum_dy_xmu));
}
py::tuple as_tuple(const bn1d::Normalization& n) {
  return py::make_tuple(to_numpy(n.mean), to_numpy(n.invstd));
}

// torch.nn.functional.batch_norm, masked with lengths or mask: the running statistics are
// updated in place (in training, when given).
py::object batch_norm(const py::object& x, const py::object& running_mean,
                      const py::object& running_var, const py::object& weight,
                      const py::object& bias, bool training, double momentum, double eps,
                      const py::object& lengths, const py::object& mask,
                      const std::string& activation, double negative_slope) {
  const bn1d::Tensor input = tensor_of(x, "input");
  const bn1d::Tensor mean = optional_tensor(running_mean, "running_mean", true);
  const bn1d::Tensor var = optional_tensor(running_var, "running_var", true);
  const bn1d::Tensor w = optional_tensor(weight, "weight", false);
  const bn1d::Tensor b = optional_tensor(bias, "bias", false);
  const auto valid = maybe_valid(lengths, mask);
  const bn1d::FusedActivation act = fused_activation(activation, negative_slope);
  return to_numpy(without_gil([&] {
    return valid ? bn1d::batch_norm(input, mean, var, w, b, training, momentum, eps, *valid, act)
                 : bn1d::batch_norm(input, mean, var, w, b, training, momentum, eps, act);
  }));
}

py::tuple batch_stats(const py::object& x, const py::object& lengths, const py::object& mask) {
  const bn1d::Tensor input = tensor_of(x, "input");
  const auto valid = maybe_valid(lengths, mask);
  return as_tuple(without_gil(
      [&] { return valid ? bn1d::batch_stats(input, *valid) : bn1d::batch_stats(input); }));
}

py::tuple combine_stats(const std::vector<py::tuple>& parts) {
  std::vector<bn1d::BatchStats> stats;
  stats.reserve(parts.size());
  for (const auto& p : parts) stats.push_back(batch_stats_of(p));
  return as_tuple(bn1d::combine_stats(stats));
}

py::tuple combine_grad_stats(const std::vector<py::tuple>& parts) {
  std::vector<bn1d::GradStats> stats;
  stats.reserve(parts.size());
  for (const auto& p : parts) stats.push_back(grad_stats_of(p));
  return as_tuple(bn1d::combine_grad_stats(stats));
}

py::object batch_norm_apply(const py::object& x, const py::tuple& norm, const py::object& weight,
                            const py::object& bias, const py::object& lengths,
                            const py::object& mask, const std::string& activation,
                            double negative_slope) {
  const bn1d::Tensor input = tensor_of(x, "input");
  const bn1d::Normalization n = normalization_of(norm);
  const bn1d::Tensor w = optional_tensor(weight, "weight", false);
  const bn1d::Tensor b = optional_tensor(bias, "bias", false);
  const auto valid = maybe_valid(lengths, mask);
  const bn1d::FusedActivation act = fused_activation(activation, negative_slope);
  return to_numpy(without_gil([&] {
    return valid ? bn1d::batch_norm_apply(input, n, w, b, *valid, act)
                 : bn1d::batch_norm_apply(input, n, w, b, act);
  }));
}

// Without an activation, weight and bias are not read (the sums do not depend on them).
py::tuple backward_stats(const py::object& dy, const py::object& x, const py::tuple& norm,
                         const py::object& lengths, const py::object& mask,
                         const py::object& weight, const py::object& bias,
                         const std::string& activation, double negative_slope) {
  const bn1d::Tensor grad_output = tensor_of(dy, "grad_output");
  const bn1d::Tensor input = tensor_of(x, "input");
  const bn1d::Normalization n = normalization_of(norm);
  const bn1d::Tensor w = optional_tensor(weight, "weight", false);
  const bn1d::Tensor b = optional_tensor(bias, "bias", false);
  const auto valid = maybe_valid(lengths, mask);
  const bn1d::FusedActivation act = fused_activation(activation, negative_slope);
  return as_tuple(without_gil([&] {
    if (!act.enabled()) {
      return valid ? bn1d::backward_stats(grad_output, input, n, *valid)
                   : bn1d::backward_stats(grad_output, input, n);
    }
    return valid ? bn1d::backward_stats(grad_output, input, n, w, b, act, *valid)
                 : bn1d::backward_stats(grad_output, input, n, w, b, act);
  }));
}

py::object backward_input(const py::object& dy, const py::object& x, const py::tuple& norm,
                          const py::object& weight, const py::tuple& global, bool batch_statistics,
                          const py::object& lengths, const py::object& mask, const py::object& bias,
                          const std::string& activation, double negative_slope) {
  const bn1d::Tensor grad_output = tensor_of(dy, "grad_output");
  const bn1d::Tensor input = tensor_of(x, "input");
  const bn1d::Normalization n = normalization_of(norm);
  const bn1d::Tensor w = optional_tensor(weight, "weight", false);
  const bn1d::Tensor b = optional_tensor(bias, "bias", false);
  const bn1d::GradStats sums = grad_stats_of(global);
  const auto valid = maybe_valid(lengths, mask);
  const bn1d::FusedActivation act = fused_activation(activation, negative_slope);
  return to_numpy(without_gil([&] {
    if (!act.enabled()) {
      return valid ? bn1d::batch_norm_backward_input(grad_output, input, n, w, sums,
                                                     batch_statistics, *valid)
                   : bn1d::batch_norm_backward_input(grad_output, input, n, w, sums,
                                                     batch_statistics);
    }
    return valid ? bn1d::batch_norm_backward_input(grad_output, input, n, w, b, sums,
                                                   batch_statistics, act, *valid)
                 : bn1d::batch_norm_backward_input(grad_output, input, n, w, b, sums,
                                                   batch_statistics, act);
  }));
}

py::tuple backward_params(const py::tuple& stats, const py::tuple& norm, const std::string& dtype) {
  const bn1d::GradStats sums = grad_stats_of(stats);
  const bn1d::Normalization n = normalization_of(norm);
  const bn1d::BatchNormGradients grads =
      bn1d::batch_norm_backward_params(sums, n, parse_module_dtype(dtype));
  return py::make_tuple(to_numpy(grads.weight), to_numpy(grads.bias));
}

}  // namespace

void def_functional(py::module_& mod) {
  mod.def("batch_norm", &batch_norm, py::arg("input"), py::arg("running_mean"),
          py::arg("running_var"), py::arg("weight"), py::arg("bias"), py::arg("training"),
          py::arg("momentum"), py::arg("eps"), py::arg("lengths"), py::arg("mask"),
          py::arg("activation"), py::arg("negative_slope"),
          "torch.nn.functional.batch_norm over (N, C) or (N, C, L) arrays (None for absent "
          "tensors), over the valid positions only with lengths or mask; the running statistics "
          "are updated in place in training. activation ('none', 'relu', 'leaky_relu') is "
          "applied to the output in the same pass.");
  mod.def("batch_stats", &batch_stats, py::arg("input"), py::arg("lengths"), py::arg("mask"),
          "(count, mean, m2) per channel of input (over the valid positions with lengths/mask).");
  mod.def("combine_stats", &combine_stats, py::arg("parts"),
          "The (count, mean, m2) of the union of the parts' batches, merged in order (Chan).");
  mod.def(
      "normalization_from_batch",
      [](const py::tuple& stats, double eps) {
        return as_tuple(bn1d::normalization_from_batch(batch_stats_of(stats), eps));
      },
      py::arg("stats"), py::arg("eps"), "(mean, invstd) with the biased variance m2 / count.");
  mod.def(
      "normalization_from_running",
      [](const py::object& running_mean, const py::object& running_var, double eps) {
        return as_tuple(bn1d::normalization_from_running(
            tensor_of(running_mean, "running_mean"), tensor_of(running_var, "running_var"), eps));
      },
      py::arg("running_mean"), py::arg("running_var"), py::arg("eps"),
      "(mean, invstd) from running statistics.");
  mod.def(
      "update_running_stats",
      [](const py::object& running_mean, const py::object& running_var, const py::tuple& stats,
         double momentum) {
        bn1d::update_running_stats(writable_tensor_of(running_mean, "running_mean"),
                                   writable_tensor_of(running_var, "running_var"),
                                   batch_stats_of(stats), momentum);
      },
      py::arg("running_mean"), py::arg("running_var"), py::arg("stats"), py::arg("momentum"),
      "Updates the running statistics in place (unbiased variance).");
  mod.def("batch_norm_apply", &batch_norm_apply, py::arg("input"), py::arg("norm"),
          py::arg("weight"), py::arg("bias"), py::arg("lengths"), py::arg("mask"),
          py::arg("activation"), py::arg("negative_slope"),
          "act((x - mean) * invstd * weight + bias) (0 at the padding with lengths/mask).");
  mod.def("backward_stats", &backward_stats, py::arg("grad_output"), py::arg("input"),
          py::arg("norm"), py::arg("lengths"), py::arg("mask"), py::arg("weight"), py::arg("bias"),
          py::arg("activation"), py::arg("negative_slope"),
          "(count, sum dy, sum dy * (x - mean)) per channel, dy gated by the activation's "
          "derivative at the forward's output (weight and bias: the forward's).");
  mod.def("combine_grad_stats", &combine_grad_stats, py::arg("parts"),
          "The sums of the parts' gradient statistics, in order.");
  mod.def("batch_norm_backward_input", &backward_input, py::arg("grad_output"), py::arg("input"),
          py::arg("norm"), py::arg("weight"), py::arg("stats"), py::arg("batch_statistics"),
          py::arg("lengths"), py::arg("mask"), py::arg("bias"), py::arg("activation"),
          py::arg("negative_slope"),
          "The input gradient, with the (global) gradient sums stats, dy gated by the "
          "activation's derivative.");
  mod.def("batch_norm_backward_params", &backward_params, py::arg("stats"), py::arg("norm"),
          py::arg("dtype"), "(grad_weight, grad_bias) in dtype from the (local) gradient sums.");
}

}  // namespace bn1d_python
