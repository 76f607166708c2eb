// SPDX-License-Identifier: MIT
// _bn1d: the pybind11 extension behind the `bn1d` Python package (python/bn1d/__init__.py).
//
// A thin layer: numpy arrays are wrapped zero-copy as bn1d::Tensor views (any strides), outputs
// are numpy arrays bn1d writes into directly, parameters and buffers are numpy views of the
// module's own storage, and every bn1d::Error becomes a ValueError with the same message (an
// IoError, a file that cannot be opened, read or written, an OSError of its errno's class).
// No math happens here. This file: BatchNorm1d (with its masked forms), errors, state files;
// module_binding.hpp: what BatchNorm1d and GhostBatchNorm1d (bind_ghost.cpp) share;
// bind_functional.cpp: the functional API and its separable steps.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bn1d/bn1d.hpp>

#include "bfloat16_tensor.hpp"
#include "module_binding.hpp"
#include "numpy_tensor.hpp"

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace py = pybind11;
using namespace bn1d_python;

namespace bn1d_python {

bn1d::DType parse_module_dtype(const std::string& name) {
  if (name == "float32") return bn1d::DType::Float32;
  if (name == "float64") return bn1d::DType::Float64;
  if (name == "bfloat16") return bn1d::DType::BFloat16;
  if (name == "float16") return bn1d::DType::Float16;
  throw bn1d::Error("dtype: expected float32, float64, bfloat16 or float16, got " + name);
}

bn1d::StateDict state_of_items(const std::vector<std::pair<std::string, py::object>>& items,
                               const bn1d::BatchNorm1dOptions& o) {
  bn1d::StateDict state;
  for (const auto& [key, value] : items) {
    const bool known =
        ((key == "weight" || key == "bias") && o.affine()) ||
        ((key == "running_mean" || key == "running_var" || key == "num_batches_tracked") &&
         o.track_running_stats());
    if (py::isinstance<BFloat16Tensor>(value)) {
      state.insert(key, value.cast<const BFloat16Tensor&>().tensor);
      continue;
    }
    const auto array = value.cast<py::array>();
    if (!bn1d_dtype(array.dtype())) {
      if (known) {
        throw bn1d::Error(
            "Error(s) in loading state_dict for BatchNorm1d: size or dtype mismatch for " + key +
            ": copying a tensor of unsupported dtype " + numpy_dtype_name(array.dtype()) +
            " from the state dict.");
      }
      // An unknown key: bn1d only reports it (strict) or ignores it; its values are never read.
      state.insert(key, bn1d::Tensor::empty({0}, bn1d::DType::Int64));
      continue;
    }
    state.insert(key, wrap(array, key.c_str()));
  }
  return state;
}

}  // namespace bn1d_python

namespace {

using BatchNorm = Module<bn1d::BatchNorm1d>;

// forward(x) or, with lengths or mask, the masked forward.
py::object forward(BatchNorm& self, const py::object& x, const py::object& lengths,
                   const py::object& mask) {
  if (lengths.is_none() && mask.is_none()) {
    return forward_with(
        self, x, [&](const bn1d::Tensor& in, bn1d::Tensor& out) { self.m.forward(in, out); });
  }
  const bn1d::ValidPositions valid = valid_positions(lengths, mask);
  return forward_with(
      self, x, [&](const bn1d::Tensor& in, bn1d::Tensor& out) { self.m.forward(in, out, valid); });
}

py::object infer(BatchNorm& self, const py::object& x, const py::object& lengths,
                 const py::object& mask) {
  if (lengths.is_none() && mask.is_none()) {
    return infer_with(self, x,
                      [&](const bn1d::Tensor& in, bn1d::Tensor& out) { self.m.infer(in, out); });
  }
  const bn1d::ValidPositions valid = valid_positions(lengths, mask);
  return infer_with(
      self, x, [&](const bn1d::Tensor& in, bn1d::Tensor& out) { self.m.infer(in, out, valid); });
}

// ---- errors ----------------------------------------------------------------------------------

// Raises @p type with @p what decoded as UTF-8, bytes that are not UTF-8 (a file name, a key from
// a file) as \xNN escapes: the message always arrives, whole.
void set_error(PyObject* type, const char* what) {
  PyObject* message =
      PyUnicode_DecodeUTF8(what, static_cast<Py_ssize_t>(std::strlen(what)), "backslashreplace");
  if (message == nullptr) return;  // MemoryError is set
  PyErr_SetObject(type, message);
  Py_DECREF(message);
}

// Raises OSError(@p error_code, @p what): Python picks the subclass of the errno
// (FileNotFoundError for ENOENT, PermissionError, IsADirectoryError, ...).
void set_os_error(int error_code, const char* what) {
  PyObject* message =
      PyUnicode_DecodeUTF8(what, static_cast<Py_ssize_t>(std::strlen(what)), "backslashreplace");
  if (message == nullptr) return;                               // MemoryError is set
  PyObject* args = Py_BuildValue("(iN)", error_code, message);  // steals message
  if (args == nullptr) return;
  PyErr_SetObject(PyExc_OSError, args);
  Py_DECREF(args);
}

// bn1d::IoError becomes an OSError (with its errno when it has one), every other bn1d::Error a
// ValueError, with what() as message.
void translate_errors() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const bn1d::IoError& e) {
      if (e.error_code() != 0) {
        set_os_error(e.error_code(), e.what());
      } else {
        set_error(PyExc_OSError, e.what());
      }
    } catch (const bn1d::Error& e) {
      set_error(PyExc_ValueError, e.what());
    }
  });
}

// ---- state files -----------------------------------------------------------------------------

// The bn1d tensor a save_file item stands for: @p value holds the elements of the file dtype
// @p dtype (the Python layer checks and names the key); bfloat16 comes as the int16 bits of a
// C-contiguous array, since numpy has no bfloat16.
bn1d::Tensor file_tensor(const py::array& value, const std::string& dtype, const std::string& key) {
  if (dtype == "bfloat16") {
    if (value.itemsize() != 2 || !(value.flags() & py::array::c_style)) {
      throw bn1d::Error(key + ": expected the C-contiguous 16-bit bits of a bfloat16 tensor");
    }
    return bn1d::Tensor::from_blob(value.data(),
                                   bn1d::Shape(value.shape(), value.shape() + value.ndim()),
                                   bn1d::DType::BFloat16);
  }
  bn1d::Tensor t = wrap(value, key.c_str());
  if (dtype != bn1d::dtype_name(t.dtype())) {
    throw bn1d::Error(key + ": expected a " + dtype + " array, got " + bn1d::dtype_name(t.dtype()));
  }
  return t;
}

// Writes the (key, array, dtype) items @p items, in their order, as the safetensors file @p path
// with @p metadata. The dtypes are float32, float64, int64, float16 (F32, F64, I64, F16) or
// bfloat16 (BF16, see file_tensor).
void save_file(const std::vector<std::tuple<std::string, py::array, std::string>>& items,
               const std::string& path, const bn1d::Metadata& metadata) {
  bn1d::StateDict state;
  for (const auto& [key, value, dtype] : items) state.insert(key, file_tensor(value, dtype, key));
  py::gil_scoped_release nogil;  // `items` keeps the arrays alive until the write is done
  bn1d::save_safetensors(path, state, metadata);
}

// @p t (a contiguous bfloat16 tensor) widened exactly to float32: numpy has no bfloat16.
bn1d::Tensor widen_bfloat16(const bn1d::Tensor& t) {
  bn1d::Tensor wide = bn1d::Tensor::empty(t.sizes(), bn1d::DType::Float32);
  const bn1d::BFloat16* in = t.data<bn1d::BFloat16>();
  float* out = wide.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = static_cast<float>(bn1d::to_double(in[i]));
  return wide;
}

// The tensors of the safetensors file @p path as a dict of new numpy arrays, in file order.
py::dict load_file(const std::string& path) {
  bn1d::StateDict state;
  {
    py::gil_scoped_release nogil;
    state = bn1d::load_safetensors(path);
  }
  py::dict tensors;
  for (const auto& [key, value] : state) {
    tensors[py::str(key)] =
        to_numpy(value.dtype() == bn1d::DType::BFloat16 ? widen_bfloat16(value) : value);
  }
  return tensors;
}

// ---- the Python class -------------------------------------------------------------------

// The constructor, forward and infer (the rest: module_binding.hpp).
void def_compute(py::class_<BatchNorm>& cls) {
  cls.def(py::init([](int64_t num_features, double eps, std::optional<double> momentum, bool affine,
                      bool track_running_stats, const std::string& dtype,
                      const std::string& activation, double negative_slope) {
            return new BatchNorm(bn1d::BatchNorm1d(
                module_options(num_features, eps, momentum, affine, track_running_stats, dtype,
                               activation, negative_slope)));
          }),
          py::arg("num_features"), py::arg("eps") = 1e-5, py::arg("momentum") = 0.1,
          py::arg("affine") = true, py::arg("track_running_stats") = true,
          py::arg("dtype") = "float32", py::arg("activation") = "none",
          py::arg("negative_slope") = 0.01,
          "A module of num_features channels; dtype: 'float32', 'float64' (which also take "
          "bfloat16 and float16 inputs: mixed precision), 'bfloat16' or 'float16' (pure); "
          "activation: 'none', 'relu' or 'leaky_relu' (with negative_slope), fused into the "
          "output.")
      .def("forward", &forward, py::arg("input"), py::arg("lengths") = py::none(),
           py::arg("mask") = py::none(),
           "Normalizes input of shape (N, C) or (N, C, L); keeps it (no copy) for backward. With "
           "lengths (int64 (N,)) or mask (bool (N, L)): over the valid positions only, 0 at the "
           "padding.")
      .def("infer", &infer, py::arg("input"), py::arg("lengths") = py::none(),
           py::arg("mask") = py::none(),
           "Normalizes input with the running statistics whatever the mode, changing nothing "
           "(lengths, mask: as forward).");
}

}  // namespace

PYBIND11_MODULE(_bn1d, mod) {
  mod.doc() =
      "bn1d's C++ core: BatchNorm1d, GhostBatchNorm1d and safetensors files. Use the bn1d package, "
      "which checks "
      "arguments and converts tensors, not this module.";
#ifdef BN1D_VERSION_STRING
  mod.attr("__version__") = BN1D_VERSION_STRING;  // set by the build from the project's version
#else
  mod.attr("__version__") = "unknown";
#endif
  translate_errors();
  bn1d_python::def_bfloat16_tensor(mod);

  py::class_<BatchNorm> cls(mod, "BatchNorm1d",
                            "Batch normalization over (N, C) or (N, C, L) numpy arrays; the "
                            "computation behind bn1d.BatchNorm1d.");
  def_compute(cls);
  def_common_methods(cls);
  def_state_properties(cls);
  def_state_methods(cls);
  def_ghost_batch_norm(mod);
  def_functional(mod);
  def_fold(mod);
  mod.def("save_file", &save_file, py::arg("items"), py::arg("path"), py::arg("metadata"),
          "Writes the (key, array, dtype) items, in order, as the safetensors file path with the "
          "str to str metadata. dtype: float32, float64, int64, float16 (the array's) or "
          "bfloat16 (the array holds the bits, as int16).");
  mod.def("load_file", &load_file, py::arg("path"),
          "The tensors of the safetensors file path as a dict of numpy arrays, in file order "
          "(BF16 tensors widened exactly to float32).");
}
