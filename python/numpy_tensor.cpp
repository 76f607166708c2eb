// SPDX-License-Identifier: MIT
// numpy arrays <-> bn1d::Tensor (numpy_tensor.hpp).
#include "numpy_tensor.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bfloat16_tensor.hpp"

namespace py = pybind11;

namespace bn1d_python {

namespace {

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

// A zero-copy bn1d view of @p a that bn1d may write into (a result buffer).
bn1d::Tensor wrap_writable(py::array& a, const char* name) {
  Layout l = layout_of(a, name);
  return bn1d::Tensor::from_blob(a.mutable_data(), std::move(l.sizes), std::move(l.strides),
                                 l.dtype);
}

}  // namespace

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

// A zero-copy, read-only bn1d view of @p a (any strides; a read-only array is fine). The array
// must stay alive while bn1d uses it.
bn1d::Tensor wrap(const py::array& a, const char* name) {
  Layout l = layout_of(a, name);
  return bn1d::Tensor::from_blob(a.data(), std::move(l.sizes), std::move(l.strides), l.dtype);
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

bn1d::Tensor writable_tensor_of(const py::object& x, const char* name) {
  if (py::isinstance<BFloat16Tensor>(x)) return x.cast<const BFloat16Tensor&>().tensor;
  auto a = x.cast<py::array>();
  if (!a.writeable()) {
    throw bn1d::Error(std::string(name) + ": expected a writable array (it is updated in place)");
  }
  return wrap_writable(a, name);
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

// The valid positions given by the Python layer: lengths (a 1-D int64 array) or mask (a 2-D
// bool array), exactly one of them not None; both C-contiguous (the Python layer checks and
// converts).
bn1d::ValidPositions valid_positions(const py::object& lengths, const py::object& mask) {
  if (!lengths.is_none()) {
    const auto a = lengths.cast<py::array_t<int64_t, py::array::c_style>>();
    return bn1d::ValidPositions::from_lengths(
        std::span<const int64_t>(a.data(), static_cast<size_t>(a.size())));
  }
  const auto a = mask.cast<py::array_t<bool, py::array::c_style>>();
  if (a.ndim() != 2) {
    throw bn1d::Error("mask: expected a 2-D (N, L) array, got " + std::to_string(a.ndim()) +
                      " dimensions");
  }
  return bn1d::ValidPositions::from_mask(
      std::span<const bool>(a.data(), static_cast<size_t>(a.size())), a.shape(0), a.shape(1));
}

}  // namespace bn1d_python
