// SPDX-License-Identifier: MIT
// What the Python classes BatchNorm1d and GhostBatchNorm1d share: a module M (bn1d::BatchNorm1d
// or bn1d::GhostBatchNorm1d, which have the same surface) with its lock and saved input, and the
// methods and properties bound the same way for both.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bn1d/bn1d.hpp>

#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bfloat16_tensor.hpp"
#include "numpy_tensor.hpp"

namespace bn1d_python {

namespace py = pybind11;

// A module plus what Python needs around it: the input object of the last forward() (the
// module keeps a view of its memory for backward()) and a lock, because calls release the GIL.
template <class M>
struct Module {
  explicit Module(M module) : m(std::move(module)) {}

  M m;
  std::shared_mutex mu;  // exclusive: forward/backward/state changes; shared: readers
  py::object saved_input = py::none();
  uint64_t forwards = 0;   // successful forward() calls, under mu
  uint64_t saved_seq = 0;  // the forward whose input saved_input holds, under the GIL

  // Runs @p f without the GIL, holding the lock (never waits for the GIL while locked).
  template <class F>
  auto exclusive(F&& f) {
    py::gil_scoped_release nogil;
    std::unique_lock lock(mu);
    return f();
  }
  template <class F>
  auto shared(F&& f) {
    py::gil_scoped_release nogil;
    std::shared_lock lock(mu);
    return f();
  }
};

// "float32", "float64", "bfloat16" or "float16" as a bn1d dtype; Error otherwise.
bn1d::DType parse_module_dtype(const std::string& name);

// "none", "relu" or "leaky_relu" as a fused activation (the Python layer maps None to "none");
// Error otherwise.
inline bn1d::Activation parse_activation(const std::string& name) {
  if (name == "none") return bn1d::Activation::None;
  if (name == "relu") return bn1d::Activation::ReLU;
  if (name == "leaky_relu") return bn1d::Activation::LeakyReLU;
  throw bn1d::Error("activation: expected None, \"relu\" or \"leaky_relu\", got \"" + name + "\"");
}

// A forward of @p x: @p step(input, output) runs without the GIL under the exclusive lock; the
// input object is kept for backward().
template <class M, class Step>
py::object forward_with(Module<M>& self, const py::object& x, Step&& step) {
  const bn1d::Tensor input = tensor_of(x, "input");
  auto [out, given] = empty_like(x, "output");
  bn1d::Tensor output = given;
  const uint64_t seq = self.exclusive([&] {
    step(input, output);
    return ++self.forwards;
  });
  if (seq > self.saved_seq) {  // a later forward on another thread may have finished first
    self.saved_input = x;
    self.saved_seq = seq;
  }
  return result(out, given, output);
}

// An inference of @p x: @p step(input, output) runs without the GIL under the shared lock.
template <class M, class Step>
py::object infer_with(Module<M>& self, const py::object& x, Step&& step) {
  const bn1d::Tensor input = tensor_of(x, "input");
  auto [out, given] = empty_like(x, "output");
  bn1d::Tensor output = given;
  self.shared([&] { step(input, output); });
  return result(out, given, output);
}

template <class M>
py::tuple backward(Module<M>& self, const py::object& grad_output) {
  const bn1d::Tensor dy = tensor_of(grad_output, "grad_output");
  bn1d::BatchNormGradients grads;
  auto [grad_input, given] = empty_like(grad_output, "grad_input");
  grads.input = given;
  self.exclusive([&] { self.m.backward(dy, grads); });
  return py::make_tuple(result(grad_input, given, grads.input), to_numpy(grads.weight),
                        to_numpy(grads.bias));
}

template <class M>
py::dict state_dict(Module<M>& self) {
  const bn1d::StateDict state = self.shared([&] { return self.m.state_dict(); });
  py::dict d;
  for (const auto& [key, value] : state) d[py::str(key)] = to_numpy(value);
  return d;
}

// (key, numpy array or BFloat16Tensor) pairs, converted by the Python layer, as a StateDict of
// views for a module with options @p o.
bn1d::StateDict state_of_items(const std::vector<std::pair<std::string, py::object>>& items,
                               const bn1d::BatchNorm1dOptions& o);

template <class M>
void load_state_dict(Module<M>& self, const std::vector<std::pair<std::string, py::object>>& items,
                     bool strict) {
  const bn1d::StateDict state = state_of_items(items, self.m.options());
  self.exclusive([&] { self.m.load_state_dict(state, strict); });
}

// A module like @p m with other options (the options are fixed in a bn1d module).
inline bn1d::BatchNorm1d rebuilt_with(const bn1d::BatchNorm1d&,
                                      const bn1d::BatchNorm1dOptions& options) {
  return bn1d::BatchNorm1d(options);
}
inline bn1d::GhostBatchNorm1d rebuilt_with(const bn1d::GhostBatchNorm1d& m,
                                           const bn1d::BatchNorm1dOptions& options) {
  return bn1d::GhostBatchNorm1d(options, m.virtual_batch_size(), m.split());
}

// Rebuilds the module with eps @p eps and momentum @p momentum, keeping its training flag,
// num_batches_tracked and parameter and buffer tensors (the same storage: numpy views stay
// valid). What the last forward saved for backward is dropped. Error (the module unchanged)
// for values the constructor rejects.
template <class M>
void set_options(Module<M>& self, double eps, std::optional<double> momentum) {
  self.exclusive([&] {
    bn1d::BatchNorm1dOptions options = self.m.options();
    options.eps(eps).momentum(momentum);
    M rebuilt = rebuilt_with(self.m, options);
    if (options.track_running_stats()) {
      bn1d::StateDict count;
      bn1d::Tensor n = bn1d::Tensor::empty({}, bn1d::DType::Int64);
      *static_cast<int64_t*>(n.raw_data()) = self.m.num_batches_tracked();
      count.insert("num_batches_tracked", n);
      rebuilt.load_state_dict(count, false);
    }
    rebuilt.weight() = self.m.weight();
    rebuilt.bias() = self.m.bias();
    rebuilt.running_mean() = self.m.running_mean();
    rebuilt.running_var() = self.m.running_var();
    rebuilt.train(self.m.is_training());
    self.m = std::move(rebuilt);
  });
}

// Read-only property @p name: a numpy view of the module's tensor @p get(module) (None when it is
// undefined), which keeps the Python object alive; a BFloat16Tensor view for bfloat16.
template <class M, class Get>
void def_tensor_view(py::class_<Module<M>>& cls, const char* name, Get get, const char* doc) {
  cls.def_property_readonly(
      name,
      [get](py::object self) -> py::object {
        Module<M>& m = self.cast<Module<M>&>();
        const bn1d::Tensor& t = get(m.m);
        if (!t.defined()) return py::none();
        if (t.dtype() == bn1d::DType::BFloat16) return py::cast(BFloat16Tensor{t, nullptr});
        return view_of(t, self);
      },
      doc);
}

// weight, bias, running_mean, running_var (views), num_batches_tracked and the options.
template <class M>
void def_state_properties(py::class_<Module<M>>& cls) {
  using Mod = Module<M>;
  def_tensor_view(
      cls, "weight", [](M& m) -> const bn1d::Tensor& { return m.weight(); },
      "The weight (gamma): a writable numpy view of the module's storage, None without affine.");
  def_tensor_view(
      cls, "bias", [](M& m) -> const bn1d::Tensor& { return m.bias(); },
      "The bias (beta): a writable numpy view of the module's storage, None without affine.");
  def_tensor_view(
      cls, "running_mean", [](M& m) -> const bn1d::Tensor& { return m.running_mean(); },
      "The running mean: a writable numpy view, None without track_running_stats.");
  def_tensor_view(
      cls, "running_var", [](M& m) -> const bn1d::Tensor& { return m.running_var(); },
      "The running variance: a writable numpy view, None without track_running_stats.");
  cls.def_property_readonly(
         "num_batches_tracked",
         [](Mod& self) { return self.shared([&] { return self.m.num_batches_tracked(); }); },
         "Training batches seen since construction or the last reset (0 without running "
         "statistics).")
      .def_property_readonly(
          "num_features", [](Mod& self) { return self.m.options().num_features(); },
          "The number of channels C.")
      .def_property_readonly(
          "eps", [](Mod& self) { return self.m.options().eps(); },
          "The value added to the variance for numerical stability (change it with set_options).")
      .def_property_readonly(
          "momentum", [](Mod& self) { return self.m.options().momentum(); },
          "The running statistics' momentum, None for a cumulative average (see set_options).")
      .def_property_readonly(
          "affine", [](Mod& self) { return self.m.options().affine(); },
          "Whether the module has a weight and a bias.")
      .def_property_readonly(
          "track_running_stats", [](Mod& self) { return self.m.options().track_running_stats(); },
          "Whether the module keeps running statistics.")
      .def_property_readonly(
          "dtype",
          [](Mod& self) { return std::string(bn1d::dtype_name(self.m.options().dtype())); },
          "The dtype of the parameters and buffers: 'float32', 'float64', 'bfloat16' or "
          "'float16'.")
      .def_property_readonly(
          "activation",
          [](Mod& self) { return bn1d::activation_name(self.m.options().activation()); },
          "The activation fused into the output: 'none', 'relu' or 'leaky_relu'.")
      .def_property_readonly(
          "negative_slope", [](Mod& self) { return self.m.options().negative_slope(); },
          "LeakyReLU's slope for negative values (unused by the other activations).");
}

// state_dict, load_state_dict, save, load and the resets.
template <class M>
void def_state_methods(py::class_<Module<M>>& cls) {
  using Mod = Module<M>;
  cls.def("state_dict", &state_dict<M>,
          "A dict of copies of weight, bias, running_mean, running_var and num_batches_tracked (a "
          "0-d int64 array), those the module has, in torch's order.")
      .def("load_state_dict", &load_state_dict<M>, py::arg("items"), py::arg("strict") = true,
           "Copies the (key, array) pairs items into the module. Wrong shapes or dtypes are "
           "errors, and with strict missing and unexpected keys too; on error nothing changes. "
           "Without strict, missing entries keep their values, except num_batches_tracked, "
           "which becomes 0 (as torch loads a dict without version metadata).")
      .def(
          "save",
          [](Mod& self, const std::string& path) { self.shared([&] { self.m.save(path); }); },
          py::arg("path"), "Writes state_dict() to path as a safetensors file.")
      .def(
          "load",
          [](Mod& self, const std::string& path, const std::string& prefix) {
            self.exclusive([&] { self.m.load(path, prefix); });
          },
          py::arg("path"), py::arg("prefix") = "",
          "Loads the entries prefix + key of the safetensors file path, strictly.")
      .def(
          "reset_parameters", [](Mod& self) { self.exclusive([&] { self.m.reset_parameters(); }); },
          "Resets the running statistics, the weight to 1 and the bias to 0.")
      .def(
          "reset_running_stats",
          [](Mod& self) { self.exclusive([&] { self.m.reset_running_stats(); }); },
          "Resets running_mean to 0, running_var to 1 and num_batches_tracked to 0.");
}

// The mode, set_options, backward and repr.
template <class M>
void def_common_methods(py::class_<Module<M>>& cls) {
  using Mod = Module<M>;
  cls.def_property(
         "training", [](Mod& self) { return self.shared([&] { return self.m.is_training(); }); },
         [](Mod& self, bool on) { self.exclusive([&] { self.m.train(on); }); },
         "True in training mode (batch statistics), False in evaluation mode.")
      .def("set_options", &set_options<M>, py::arg("eps"), py::arg("momentum"),
           "Rebuilds the module with eps and momentum (None: a cumulative average), keeping the "
           "parameters, buffers, count and mode; drops what forward saved for backward. On error "
           "nothing changes.")
      .def("backward", &backward<M>, py::arg("grad_output"),
           "(grad_input, grad_weight, grad_bias) of the last forward; the last two are None "
           "without affine.")
      .def(
          "__repr__",
          [](const Mod& self) {
            std::ostringstream s;
            s << self.m;
            return s.str();
          },
          "The module's options as C++ prints them.");
}

// The options shared by both constructors, checked by the module's constructor.
inline bn1d::BatchNorm1dOptions module_options(int64_t num_features, double eps,
                                               std::optional<double> momentum, bool affine,
                                               bool track_running_stats, const std::string& dtype,
                                               const std::string& activation,
                                               double negative_slope) {
  return bn1d::BatchNorm1dOptions(num_features)
      .eps(eps)
      .momentum(momentum)
      .affine(affine)
      .track_running_stats(track_running_stats)
      .dtype(parse_module_dtype(dtype))
      .activation(parse_activation(activation))
      .negative_slope(negative_slope);
}

// Registers the class GhostBatchNorm1d in @p mod (bind_ghost.cpp).
void def_ghost_batch_norm(py::module_& mod);
// Registers batch_norm and the separable steps of bn1d.functional in @p mod (bind_functional.cpp).
void def_functional(py::module_& mod);
// Registers fold_into_preceding and fold_into_following in @p mod (bind_fold.cpp).
void def_fold(py::module_& mod);

}  // namespace bn1d_python
