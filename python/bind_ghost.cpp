// SPDX-License-Identifier: MIT
// The Python class GhostBatchNorm1d (bn1d::GhostBatchNorm1d): the constructor, forward, infer,
// the virtual-batch options; the rest is BatchNorm1d's (module_binding.hpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bn1d/bn1d.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "module_binding.hpp"

namespace bn1d_python {

namespace {

using Ghost = Module<bn1d::GhostBatchNorm1d>;

bn1d::GhostSplit parse_split(const std::string& name) {
  if (name == "chunk") return bn1d::GhostSplit::Chunk;
  if (name == "fixed") return bn1d::GhostSplit::Fixed;
  throw bn1d::Error("split: expected \"chunk\" or \"fixed\", got \"" + name + "\"");
}

}  // namespace

void def_ghost_batch_norm(py::module_& mod) {
  py::class_<Ghost> cls(mod, "GhostBatchNorm1d",
                        "Ghost (virtual-batch) batch normalization over (N, C) or (N, C, L) numpy "
                        "arrays; the computation behind bn1d.GhostBatchNorm1d.");
  cls.def(py::init([](int64_t num_features, int64_t virtual_batch_size,
                      std::optional<double> momentum, const std::string& split, double eps,
                      bool affine, bool track_running_stats, const std::string& dtype,
                      const std::string& activation, double negative_slope) {
            return new Ghost(bn1d::GhostBatchNorm1d(
                module_options(num_features, eps, momentum, affine, track_running_stats, dtype,
                               activation, negative_slope),
                virtual_batch_size, parse_split(split)));
          }),
          py::arg("num_features"), py::arg("virtual_batch_size") = 128, py::arg("momentum") = 0.01,
          py::arg("split") = "chunk", py::arg("eps") = 1e-5, py::arg("affine") = true,
          py::arg("track_running_stats") = true, py::arg("dtype") = "float32",
          py::arg("activation") = "none", py::arg("negative_slope") = 0.01,
          "A module of num_features channels normalizing virtual batches of virtual_batch_size "
          "samples; split: 'chunk' (torch.chunk, TabNet's) or 'fixed'; activation: 'none', "
          "'relu' or 'leaky_relu' (with negative_slope), fused into the output.")
      .def(
          "forward",
          [](Ghost& self, const py::object& x) {
            return forward_with(self, x, [&](const bn1d::Tensor& in, bn1d::Tensor& out) {
              self.m.forward(in, out);
            });
          },
          py::arg("input"),
          "Normalizes input of shape (N, C) or (N, C, L) chunk by chunk; keeps it (no copy) for "
          "backward.")
      .def(
          "infer",
          [](Ghost& self, const py::object& x) {
            return infer_with(
                self, x, [&](const bn1d::Tensor& in, bn1d::Tensor& out) { self.m.infer(in, out); });
          },
          py::arg("input"),
          "Normalizes input with the running statistics whatever the mode, changing nothing.")
      .def(
          "chunk_bounds",
          [](Ghost& self, int64_t n, int64_t length) { return self.m.chunk_bounds(n, length); },
          py::arg("n"), py::arg("length") = 1,
          "The chunk boundaries [0, n_1, ..., n] for n samples of length L (1 for (N, C)).")
      .def_property_readonly(
          "virtual_batch_size", [](Ghost& self) { return self.m.virtual_batch_size(); },
          "The number of samples of a virtual batch.")
      .def_property_readonly(
          "split", [](Ghost& self) { return std::string(bn1d::ghost_split_name(self.m.split())); },
          "'chunk' or 'fixed'.");
  def_common_methods(cls);
  def_state_properties(cls);
  def_state_methods(cls);
}

}  // namespace bn1d_python
