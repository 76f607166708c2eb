// SPDX-License-Identifier: MIT
// Folding an eval-mode BatchNorm1d into the adjacent Linear or Conv1d (bn1d/fold.hpp) for
// Python: the Python layer (python/bn1d/_fold.py) checks the argument types and converts
// tensors to numpy; the results come back as new arrays. No math happens here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <bn1d/bn1d.hpp>

#include "module_binding.hpp"
#include "numpy_tensor.hpp"

namespace bn1d_python {

namespace {

using BatchNorm = Module<bn1d::BatchNorm1d>;

using Fold = bn1d::FoldedLinear (*)(const bn1d::BatchNorm1d&, const bn1d::Tensor&,
                                    const bn1d::Tensor&);

// (weight', bias') of @p fold(bn, weight, bias), run under the module's shared lock without the
// GIL; bias None is a layer without bias.
py::tuple fold_with(BatchNorm& bn, const py::object& weight, const py::object& bias, Fold fold) {
  const bn1d::Tensor w = tensor_of(weight, "weight");
  const bn1d::Tensor b = bias.is_none() ? bn1d::Tensor() : tensor_of(bias, "bias");
  const bn1d::FoldedLinear folded = bn.shared([&] { return fold(bn.m, w, b); });
  return py::make_tuple(to_numpy(folded.weight), to_numpy(folded.bias));
}

}  // namespace

void def_fold(py::module_& mod) {
  mod.def(
      "fold_into_preceding",
      [](BatchNorm& bn, const py::object& weight, const py::object& bias) {
        return fold_with(bn, weight, bias, &bn1d::fold_into_preceding);
      },
      py::arg("bn"), py::arg("weight"), py::arg("bias"),
      "(weight, bias) of the Linear (weight (C, in)) or Conv1d (weight (C, in, k)) before the "
      "eval-mode bn, with bn folded in.");
  mod.def(
      "fold_into_following",
      [](BatchNorm& bn, const py::object& weight, const py::object& bias) {
        return fold_with(bn, weight, bias, &bn1d::fold_into_following);
      },
      py::arg("bn"), py::arg("weight"), py::arg("bias"),
      "(weight, bias) of the Linear (weight (out, C)) after the eval-mode bn, with bn folded in.");
}

}  // namespace bn1d_python
