// SPDX-License-Identifier: MIT
// _bn1d: the pybind11 extension behind the `bn1d` Python package (python/bn1d/__init__.py).
//
// A thin layer: numpy arrays are wrapped zero-copy as bn1d::Tensor views (any strides), outputs
// are numpy arrays bn1d writes into directly, parameters and buffers are numpy views of the
// module's own storage, and every bn1d::Error becomes a ValueError with the same message (an
// IoError, a file that cannot be opened, read or written, an OSError of its errno's class).
// No math happens here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bn1d/bn1d.hpp>

#include "bfloat16_tensor.hpp"

#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace py = pybind11;
using bn1d_python::BFloat16Tensor;

namespace {

// ---- numpy <-> bn1d::Tensor ----------------------------------------------------------------

// The bn1d dtype of a numpy dtype, or nullopt when bn1d has none (non-native byte order too).
std::optional<bn1d::DType> bn1d_dtype(const py::dtype& dt) {
  if (!dt.attr("isnative").cast<bool>()) return std::nullopt;
  if (dt.kind() == 'f' && dt.itemsize() == 4) return bn1d::DType::Float32;
  if (dt.kind() == 'f' && dt.itemsize() == 8) return bn1d::DType::Float64;
  if (dt.kind() == 'i' && dt.itemsize() == 8) return bn1d::DType::Int64;
  if (dt.kind() == 'f' && dt.itemsize() == 2) return bn1d::DType::Float16;
  return std::nullopt;
}

py::dtype numpy_dtype(bn1d::DType dtype) {
  switch (dtype) {
    case bn1d::DType::Float32:
      return py::dtype::of<float>();
    case bn1d::DType::Float64:
      return py::dtype::of<double>();
    case bn1d::DType::Int64:
      return py::dtype::of<std::int64_t>();
    case bn1d::DType::Float16:
      return py::dtype("float16");
    case bn1d::DType::BFloat16:
      break;  // numpy has no bfloat16: load_file widens it to float32 first
  }
  throw bn1d::Error(std::string("numpy has no dtype for ") + bn1d::dtype_name(dtype));
}

std::string numpy_dtype_name(const py::dtype& dt) {
  return py::str(py::object(dt)).cast<std::string>();
}

// The dtype, sizes and strides (in elements) of @p a as bn1d sees them; Error when bn1d cannot.
struct Layout {
  bn1d::DType dtype;
  bn1d::Shape sizes, strides;
};

Layout layout_of(const py::array& a, const char* name) {
  const std::optional<bn1d::DType> dtype = bn1d_dtype(a.dtype());
  if (!dtype) {
    throw bn1d::Error(std::string(name) +
                      ": expected dtype float32, float64, bfloat16 or float16, got " +
                      numpy_dtype_name(a.dtype()));
  }
  const auto itemsize = static_cast<py::ssize_t>(a.itemsize());
  Layout layout{*dtype, {}, {}};
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    layout.sizes.push_back(static_cast<int64_t>(a.shape(d)));
    if (a.strides(d) % itemsize != 0) {
      throw bn1d::Error(std::string(name) + ": stride " + std::to_string(a.strides(d)) +
                        " bytes of dimension " + std::to_string(d) +
                        " is not a multiple of the item size (" + std::to_string(itemsize) +
                        " bytes)");
    }
    layout.strides.push_back(static_cast<int64_t>(a.strides(d) / itemsize));
  }
  if (!a.attr("flags").attr("aligned").cast<bool>()) {
    throw bn1d::Error(std::string(name) + ": expected an array aligned to its item size");
  }
  return layout;
}

// A zero-copy, read-only bn1d view of @p a (any strides; a read-only array is fine). The array
// must stay alive while bn1d uses it.
bn1d::Tensor wrap(const py::array& a, const char* name) {
  Layout l = layout_of(a, name);
  return bn1d::Tensor::from_blob(a.data(), std::move(l.sizes), std::move(l.strides), l.dtype);
}

// A zero-copy bn1d view of @p a that bn1d may write into (a result buffer).
bn1d::Tensor wrap_writable(py::array& a, const char* name) {
  Layout l = layout_of(a, name);
  return bn1d::Tensor::from_blob(a.mutable_data(), std::move(l.sizes), std::move(l.strides),
                                 l.dtype);
}

// A numpy array over the memory of @p t, kept alive by @p base.
py::array view_of(const bn1d::Tensor& t, py::handle base) {
  std::vector<py::ssize_t> shape, strides;
  const auto itemsize = static_cast<py::ssize_t>(bn1d::element_size(t.dtype()));
  for (int64_t d = 0; d < t.dim(); ++d) {
    shape.push_back(static_cast<py::ssize_t>(t.sizes()[d]));
    strides.push_back(static_cast<py::ssize_t>(t.strides()[d]) * itemsize);
  }
  return py::array(numpy_dtype(t.dtype()), std::move(shape), std::move(strides), t.raw_data(),
                   base);
}

// A numpy array sharing the storage of @p t (a Tensor copy keeps it alive), a BFloat16Tensor
// for bfloat16 (numpy has none); None if undefined.
py::object to_numpy(const bn1d::Tensor& t) {
  if (!t.defined()) return py::none();
  if (t.dtype() == bn1d::DType::BFloat16) return py::cast(BFloat16Tensor{t, nullptr});
  auto* holder = new bn1d::Tensor(t);
  py::capsule base(holder, [](void* p) { delete static_cast<bn1d::Tensor*>(p); });
  return view_of(*holder, base);
}

// The bn1d view of @p x, a numpy array (see wrap) or a BFloat16Tensor (sharing its memory).
bn1d::Tensor tensor_of(const py::object& x, const char* name) {
  if (py::isinstance<BFloat16Tensor>(x)) return x.cast<const BFloat16Tensor&>().tensor;
  return wrap(x.cast<py::array>(), name);
}

// A result buffer like @p like: the Python object (a new C-contiguous numpy array, or a
// BFloat16Tensor) and bn1d's writable view of it.
std::pair<py::object, bn1d::Tensor> empty_like(const py::object& like, const char* name) {
  if (py::isinstance<BFloat16Tensor>(like)) {
    const bn1d::Tensor& t = like.cast<const BFloat16Tensor&>().tensor;
    bn1d::Tensor out = bn1d::Tensor::empty(t.sizes(), bn1d::DType::BFloat16);
    return {py::cast(BFloat16Tensor{out, nullptr}), out};
  }
  const auto a = like.cast<py::array>();
  py::array out(a.dtype(), std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
  bn1d::Tensor view = wrap_writable(out, name);
  return {out, view};
}

// What bn1d wrote into: @p out when bn1d reused its buffer @p given, else its new tensor.
py::object result(const py::object& out, const bn1d::Tensor& given, const bn1d::Tensor& written) {
  if (written.raw_data() == given.raw_data() || written.numel() == 0) return out;
  return to_numpy(written);
}

// ---- the module ----------------------------------------------------------------------------

// A BatchNorm1d plus what Python needs around it: the input object of the last forward() (the
// module keeps a view of its memory for backward()) and a lock, because calls release the GIL.
struct Module {
  explicit Module(const bn1d::BatchNorm1dOptions& options) : m(options) {}

  bn1d::BatchNorm1d m;
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

bn1d::DType parse_module_dtype(const std::string& name) {
  if (name == "float32") return bn1d::DType::Float32;
  if (name == "float64") return bn1d::DType::Float64;
  if (name == "bfloat16") return bn1d::DType::BFloat16;
  if (name == "float16") return bn1d::DType::Float16;
  throw bn1d::Error("dtype: expected float32, float64, bfloat16 or float16, got " + name);
}

py::object forward(Module& self, const py::object& x) {
  const bn1d::Tensor input = tensor_of(x, "input");
  auto [out, given] = empty_like(x, "output");
  bn1d::Tensor output = given;
  const uint64_t seq = self.exclusive([&] {
    self.m.forward(input, output);
    return ++self.forwards;
  });
  if (seq > self.saved_seq) {  // a later forward on another thread may have finished first
    self.saved_input = x;
    self.saved_seq = seq;
  }
  return result(out, given, output);
}

py::object infer(Module& self, const py::object& x) {
  const bn1d::Tensor input = tensor_of(x, "input");
  auto [out, given] = empty_like(x, "output");
  bn1d::Tensor output = given;
  self.shared([&] { self.m.infer(input, output); });
  return result(out, given, output);
}

py::tuple backward(Module& self, const py::object& grad_output) {
  const bn1d::Tensor dy = tensor_of(grad_output, "grad_output");
  bn1d::BatchNorm1d::Gradients grads;
  auto [grad_input, given] = empty_like(grad_output, "grad_input");
  grads.input = given;
  self.exclusive([&] { self.m.backward(dy, grads); });
  return py::make_tuple(result(grad_input, given, grads.input), to_numpy(grads.weight),
                        to_numpy(grads.bias));
}

py::dict state_dict(Module& self) {
  const bn1d::StateDict state = self.shared([&] { return self.m.state_dict(); });
  py::dict d;
  for (const auto& [key, value] : state) d[py::str(key)] = to_numpy(value);
  return d;
}

// @p items: (key, numpy array or BFloat16Tensor) pairs in the caller's order, converted by the
// Python layer.
void load_state_dict(Module& self, const std::vector<std::pair<std::string, py::object>>& items,
                     bool strict) {
  const bn1d::BatchNorm1dOptions& o = self.m.options();
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
  self.exclusive([&] { self.m.load_state_dict(state, strict); });
}

// Rebuilds the module with eps @p eps and momentum @p momentum (the options are fixed in a
// bn1d::BatchNorm1d), keeping its training flag, num_batches_tracked and parameter and buffer
// tensors (the same storage: numpy views stay valid). What the last forward saved for backward
// is dropped. Error (the module unchanged) for values the constructor rejects.
void set_options(Module& self, double eps, std::optional<double> momentum) {
  self.exclusive([&] {
    bn1d::BatchNorm1dOptions options = self.m.options();
    options.eps(eps).momentum(momentum);
    bn1d::BatchNorm1d rebuilt(options);
    bn1d::StateDict count;
    if (options.track_running_stats()) {
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

// ---- the Python class -------------------------------------------------------------------

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

// Read-only property @p name: a numpy view of the module's tensor @p get(module) (None when it is
// undefined), which keeps the Python object alive; a BFloat16Tensor view for bfloat16.
template <class Get>
void def_tensor_view(py::class_<Module>& cls, const char* name, Get get, const char* doc) {
  cls.def_property_readonly(
      name,
      [get](py::object self) -> py::object {
        Module& m = self.cast<Module&>();
        const bn1d::Tensor& t = get(m.m);
        if (!t.defined()) return py::none();
        if (t.dtype() == bn1d::DType::BFloat16) return py::cast(BFloat16Tensor{t, nullptr});
        return view_of(t, self);
      },
      doc);
}

// weight, bias, running_mean, running_var (views), num_batches_tracked and the options.
void def_state_properties(py::class_<Module>& cls) {
  using BN = bn1d::BatchNorm1d;
  def_tensor_view(
      cls, "weight", [](BN& m) -> const bn1d::Tensor& { return m.weight(); },
      "The weight (gamma): a writable numpy view of the module's storage, None without affine.");
  def_tensor_view(
      cls, "bias", [](BN& m) -> const bn1d::Tensor& { return m.bias(); },
      "The bias (beta): a writable numpy view of the module's storage, None without affine.");
  def_tensor_view(
      cls, "running_mean", [](BN& m) -> const bn1d::Tensor& { return m.running_mean(); },
      "The running mean: a writable numpy view, None without track_running_stats.");
  def_tensor_view(
      cls, "running_var", [](BN& m) -> const bn1d::Tensor& { return m.running_var(); },
      "The running variance: a writable numpy view, None without track_running_stats.");
  cls.def_property_readonly(
         "num_batches_tracked",
         [](Module& self) { return self.shared([&] { return self.m.num_batches_tracked(); }); },
         "Training batches seen since construction or the last reset (0 without running "
         "statistics).")
      .def_property_readonly(
          "num_features", [](Module& self) { return self.m.options().num_features(); },
          "The number of channels C.")
      .def_property_readonly(
          "eps", [](Module& self) { return self.m.options().eps(); },
          "The value added to the variance for numerical stability (change it with set_options).")
      .def_property_readonly(
          "momentum", [](Module& self) { return self.m.options().momentum(); },
          "The running statistics' momentum, None for a cumulative average (see set_options).")
      .def_property_readonly(
          "affine", [](Module& self) { return self.m.options().affine(); },
          "Whether the module has a weight and a bias.")
      .def_property_readonly(
          "track_running_stats",
          [](Module& self) { return self.m.options().track_running_stats(); },
          "Whether the module keeps running statistics.")
      .def_property_readonly(
          "dtype",
          [](Module& self) { return std::string(bn1d::dtype_name(self.m.options().dtype())); },
          "The dtype of the parameters and buffers: 'float32', 'float64', 'bfloat16' or "
          "'float16'.");
}

// state_dict, load_state_dict, save, load and the resets.
void def_state_methods(py::class_<Module>& cls) {
  cls.def("state_dict", &state_dict,
          "A dict of copies of weight, bias, running_mean, running_var and num_batches_tracked (a "
          "0-d int64 array), those the module has, in torch's order.")
      .def("load_state_dict", &load_state_dict, py::arg("items"), py::arg("strict") = true,
           "Copies the (key, array) pairs items into the module. Wrong shapes or dtypes are "
           "errors, and with strict missing and unexpected keys too; on error nothing changes. "
           "Without strict, missing entries keep their values, except num_batches_tracked, "
           "which becomes 0 (as torch loads a dict without version metadata).")
      .def(
          "save",
          [](Module& self, const std::string& path) { self.shared([&] { self.m.save(path); }); },
          py::arg("path"), "Writes state_dict() to path as a safetensors file.")
      .def(
          "load",
          [](Module& self, const std::string& path, const std::string& prefix) {
            self.exclusive([&] { self.m.load(path, prefix); });
          },
          py::arg("path"), py::arg("prefix") = "",
          "Loads the entries prefix + key of the safetensors file path, strictly.")
      .def(
          "reset_parameters",
          [](Module& self) { self.exclusive([&] { self.m.reset_parameters(); }); },
          "Resets the running statistics, the weight to 1 and the bias to 0.")
      .def(
          "reset_running_stats",
          [](Module& self) { self.exclusive([&] { self.m.reset_running_stats(); }); },
          "Resets running_mean to 0, running_var to 1 and num_batches_tracked to 0.");
}

// The constructor, the mode, the options and the computations.
void def_compute(py::class_<Module>& cls) {
  cls.def(py::init([](int64_t num_features, double eps, std::optional<double> momentum, bool affine,
                      bool track_running_stats, const std::string& dtype) {
            return new Module(bn1d::BatchNorm1dOptions(num_features)
                                  .eps(eps)
                                  .momentum(momentum)
                                  .affine(affine)
                                  .track_running_stats(track_running_stats)
                                  .dtype(parse_module_dtype(dtype)));
          }),
          py::arg("num_features"), py::arg("eps") = 1e-5, py::arg("momentum") = 0.1,
          py::arg("affine") = true, py::arg("track_running_stats") = true,
          py::arg("dtype") = "float32",
          "A module of num_features channels; dtype: 'float32', 'float64' (which also take "
          "bfloat16 and float16 inputs: mixed precision), 'bfloat16' or 'float16' (pure).")
      .def_property(
          "training",
          [](Module& self) { return self.shared([&] { return self.m.is_training(); }); },
          [](Module& self, bool on) { self.exclusive([&] { self.m.train(on); }); },
          "True in training mode (batch statistics), False in evaluation mode.")
      .def("set_options", &set_options, py::arg("eps"), py::arg("momentum"),
           "Rebuilds the module with eps and momentum (None: a cumulative average), keeping the "
           "parameters, buffers, count and mode; drops what forward saved for backward. On error "
           "nothing changes.")
      .def("forward", &forward, py::arg("input"),
           "Normalizes input of shape (N, C) or (N, C, L); keeps it (no copy) for backward.")
      .def("infer", &infer, py::arg("input"),
           "Normalizes input with the running statistics whatever the mode, changing nothing.")
      .def("backward", &backward, py::arg("grad_output"),
           "(grad_input, grad_weight, grad_bias) of the last forward; the last two are None "
           "without affine.")
      .def(
          "__repr__",
          [](const Module& self) {
            std::ostringstream s;
            s << self.m;
            return s.str();
          },
          "BatchNorm1d(C, eps=..., momentum=..., affine=..., track_running_stats=...).");
}

}  // namespace

PYBIND11_MODULE(_bn1d, mod) {
  mod.doc() =
      "bn1d's C++ core: BatchNorm1d and safetensors files. Use the bn1d package, which checks "
      "arguments and converts tensors, not this module.";
#ifdef BN1D_VERSION_STRING
  mod.attr("__version__") = BN1D_VERSION_STRING;  // set by the build from the project's version
#else
  mod.attr("__version__") = "unknown";
#endif
  translate_errors();
  bn1d_python::def_bfloat16_tensor(mod);

  py::class_<Module> cls(mod, "BatchNorm1d",
                         "Batch normalization over (N, C) or (N, C, L) numpy arrays; the "
                         "computation behind bn1d.BatchNorm1d.");
  def_compute(cls);
  def_state_properties(cls);
  def_state_methods(cls);
  mod.def("save_file", &save_file, py::arg("items"), py::arg("path"), py::arg("metadata"),
          "Writes the (key, array, dtype) items, in order, as the safetensors file path with the "
          "str to str metadata. dtype: float32, float64, int64, float16 (the array's) or "
          "bfloat16 (the array holds the bits, as int16).");
  mod.def("load_file", &load_file, py::arg("path"),
          "The tensors of the safetensors file path as a dict of numpy arrays, in file order "
          "(BF16 tensors widened exactly to float32).");
}
