// SPDX-License-Identifier: MIT
// BFloat16Tensor and DLPack import/export for the _bn1d extension (see bfloat16_tensor.hpp).
#include "bfloat16_tensor.hpp"

#include <dlpack/dlpack.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace bn1d_python {
namespace {

constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";

// What one exported DLManagedTensor owns: a tensor sharing the storage (and, for a view of
// imported memory, that memory's owner), and its shape/strides.
struct Export {
  bn1d::Tensor keep;
  std::shared_ptr<void> imported;
  std::vector<int64_t> shape, strides;
  DLManagedTensor managed{};
};

void delete_export(DLManagedTensor* self) { delete static_cast<Export*>(self->manager_ctx); }

// A capsule nobody consumed still owns its DLManagedTensor (the DLPack protocol's rule).
void delete_unused_capsule(PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, kCapsuleName)) return;  // consumed: the consumer deletes it
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kCapsuleName));
  if (managed != nullptr && managed->deleter != nullptr) managed->deleter(managed);
}

// __dlpack__: a "dltensor" capsule over the memory of @p self (no copy) that keeps it alive.
py::capsule to_dlpack(const BFloat16Tensor& self, const py::object& stream) {
  if (!stream.is_none()) {
    throw py::value_error("__dlpack__: stream must be None for a CPU tensor");
  }
  auto owned = std::make_unique<Export>();
  owned->keep = self.tensor;
  owned->imported = self.imported;
  owned->shape.assign(self.tensor.sizes().begin(), self.tensor.sizes().end());
  owned->strides.assign(self.tensor.strides().begin(), self.tensor.strides().end());
  DLTensor& t = owned->managed.dl_tensor;
  t.data = self.tensor.raw_data();
  t.device = {kDLCPU, 0};
  t.ndim = static_cast<int32_t>(self.tensor.dim());
  t.dtype = {static_cast<uint8_t>(kDLBfloat), 16, 1};
  t.shape = owned->shape.data();
  t.strides = owned->strides.data();
  t.byte_offset = 0;
  owned->managed.manager_ctx = owned.get();
  owned->managed.deleter = &delete_export;
  DLManagedTensor* managed = &owned->managed;
  py::capsule capsule(managed, kCapsuleName, &delete_unused_capsule);
  owned.release();  // now owned by the capsule, then by its consumer
  return capsule;
}

std::string dl_dtype_name(const DLDataType& dt) {
  static const char* const codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex"};
  std::ostringstream s;
  s << (dt.code < 6 ? codes[dt.code] : "code" + std::to_string(dt.code)) << int(dt.bits);
  if (dt.lanes != 1) s << "x" << dt.lanes;
  return s.str();
}

// The bn1d view of the bfloat16 CPU tensor in @p managed; Error naming @p name otherwise.
bn1d::Tensor view_of_dl(const DLManagedTensor& managed, const std::string& name) {
  const DLTensor& t = managed.dl_tensor;
  if (t.device.device_type != kDLCPU) {
    throw bn1d::Error(name + ": expected a CPU tensor, got DLPack device type " +
                      std::to_string(static_cast<int>(t.device.device_type)));
  }
  if (t.dtype.code != kDLBfloat || t.dtype.bits != 16 || t.dtype.lanes != 1) {
    throw bn1d::Error(name + ": expected dtype bfloat16 through __dlpack__, got " +
                      dl_dtype_name(t.dtype));
  }
  if (t.byte_offset % 2 != 0 ||
      reinterpret_cast<std::uintptr_t>(static_cast<char*>(t.data) + t.byte_offset) % 2 != 0) {
    throw bn1d::Error(name + ": expected bfloat16 memory aligned to 2 bytes, got an odd address");
  }
  if (t.ndim < 0 || t.ndim > 64 || (t.ndim > 0 && t.shape == nullptr)) {
    throw bn1d::Error(name + ": __dlpack__ gave a malformed tensor (ndim " +
                      std::to_string(t.ndim) + ")");
  }
  bn1d::Shape sizes(t.shape, t.shape + t.ndim), strides(t.ndim);
  int64_t step = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {  // no strides: row-major (DLPack 0.6)
    strides[d] = t.strides != nullptr ? t.strides[d] : step;
    step *= sizes[d];
  }
  return bn1d::Tensor::from_blob(static_cast<char*>(t.data) + t.byte_offset, std::move(sizes),
                                 std::move(strides), bn1d::DType::BFloat16);
}

// The bfloat16 tensor of @p obj (an object with __dlpack__), sharing its memory.
BFloat16Tensor from_dlpack(const py::object& obj, const std::string& name) {
  if (py::isinstance<BFloat16Tensor>(obj)) return obj.cast<BFloat16Tensor>();
  py::object capsule;
  try {
    capsule = obj.attr("__dlpack__")();
  } catch (py::error_already_set& e) {  // e.g. torch's refusal of a tensor that requires grad
    throw bn1d::Error(name + ": cannot be read through __dlpack__ (" + e.what() + ")");
  }
  if (!PyCapsule_IsValid(capsule.ptr(), kCapsuleName)) {
    throw bn1d::Error(name + ": __dlpack__ did not return a \"dltensor\" capsule");
  }
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), kCapsuleName));
  BFloat16Tensor result{view_of_dl(*managed, name), nullptr};  // throws: the capsule deletes it
  result.imported = std::shared_ptr<void>(managed, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter != nullptr) m->deleter(m);
  });
  PyCapsule_SetName(capsule.ptr(), kUsedCapsuleName);
  return result;
}

// @p values (any shape) rounded once each to bfloat16, in a new tensor.
BFloat16Tensor from_float(const py::array_t<double, py::array::c_style | py::array::forcecast>& a) {
  bn1d::Tensor t =
      bn1d::Tensor::empty(bn1d::Shape(a.shape(), a.shape() + a.ndim()), bn1d::DType::BFloat16);
  auto* out = t.data<bn1d::BFloat16>();
  for (py::ssize_t i = 0; i < a.size(); ++i) out[i] = bn1d::to_bfloat16(a.data()[i]);
  return {t, nullptr};
}

// The values of @p self widened exactly to float32, in a new C-contiguous array.
py::array_t<float> widen(const BFloat16Tensor& self) {
  const bn1d::Tensor c = self.tensor.contiguous();
  py::array_t<float> out(std::vector<py::ssize_t>(c.sizes().begin(), c.sizes().end()));
  const auto* in = c.data<bn1d::BFloat16>();
  for (int64_t i = 0; i < c.numel(); ++i) {
    out.mutable_data()[i] = static_cast<float>(bn1d::to_double(in[i]));
  }
  return out;
}

// The bits of @p self (a copy, C-contiguous uint16), and the tensor of such bits.
py::array_t<uint16_t> bits(const BFloat16Tensor& self) {
  const bn1d::Tensor c = self.tensor.contiguous();
  py::array_t<uint16_t> out(std::vector<py::ssize_t>(c.sizes().begin(), c.sizes().end()));
  const auto* in = c.data<bn1d::BFloat16>();
  for (int64_t i = 0; i < c.numel(); ++i) out.mutable_data()[i] = in[i].bits;
  return out;
}

BFloat16Tensor from_bits(const py::array_t<uint16_t, py::array::c_style>& a) {
  bn1d::Tensor t =
      bn1d::Tensor::empty(bn1d::Shape(a.shape(), a.shape() + a.ndim()), bn1d::DType::BFloat16);
  auto* out = t.data<bn1d::BFloat16>();
  for (py::ssize_t i = 0; i < a.size(); ++i) out[i].bits = a.data()[i];
  return {t, nullptr};
}

py::tuple shape_of(const BFloat16Tensor& self) {
  py::tuple shape(self.tensor.dim());
  for (int64_t d = 0; d < self.tensor.dim(); ++d) shape[d] = self.tensor.sizes()[d];
  return shape;
}

}  // namespace

void def_bfloat16_tensor(py::module_& mod) {
  py::class_<BFloat16Tensor>(
      mod, "BFloat16Tensor",
      "A bfloat16 array (numpy has none): bn1d's bfloat16 outputs, gradients and parameters. "
      "torch.from_dlpack(t) gives a torch tensor sharing its memory; numpy() and "
      "np.asarray(t) give its values widened exactly to float32.")
      .def("__dlpack__", &to_dlpack, py::arg("stream") = py::none(),
           "A DLPack capsule over the tensor's memory (no copy).")
      .def(
          "__dlpack_device__", [](const BFloat16Tensor&) { return py::make_tuple(1, 0); },
          "(kDLCPU, 0): the tensor is in CPU memory.")
      .def_property_readonly("shape", &shape_of, "The sizes, as a tuple.")
      .def_property_readonly(
          "ndim", [](const BFloat16Tensor& self) { return self.tensor.dim(); },
          "The number of dimensions.")
      .def_property_readonly(
          "dtype", [](const BFloat16Tensor&) { return "bfloat16"; }, "'bfloat16'.")
      .def("numpy", &widen, "The values widened exactly to float32, in a new numpy array.")
      .def(
          "__array__",
          [](const BFloat16Tensor& self, const py::object& dtype) -> py::array {
            py::array wide = widen(self);
            return dtype.is_none() ? wide : wide.attr("astype")(dtype).cast<py::array>();
          },
          py::arg("dtype") = py::none(), "numpy(), converted to dtype when given.")
      .def("bits", &bits, "The bits of each value, in a new C-contiguous uint16 array.")
      .def_static("from_bits", &from_bits, py::arg("bits"),
                  "A new tensor of the bfloat16 values whose bits are bits (uint16, C order).")
      .def_static("from_float", &from_float, py::arg("values"),
                  "A new tensor of values (real numbers) rounded once each to bfloat16.")
      .def_static("from_dlpack", &from_dlpack, py::arg("obj"), py::arg("name") = "input",
                  "A view (no copy) of obj, a CPU bfloat16 tensor with __dlpack__ (a torch "
                  "tensor); ValueError naming name for other tensors.")
      .def(
          "copy_",
          [](BFloat16Tensor& self, const BFloat16Tensor& src) {
            self.tensor.copy_from(src.tensor);
          },
          py::arg("src"), "Copies the values of src (same shape) into this tensor's memory.")
      .def(py::pickle([](const BFloat16Tensor& self) { return py::make_tuple(bits(self)); },
                      [](const py::tuple& state) {
                        return from_bits(
                            state[0].cast<py::array_t<uint16_t, py::array::c_style>>());
                      }))
      .def("__repr__", [](const BFloat16Tensor& self) {
        return "BFloat16Tensor(" + py::repr(widen(self).attr("tolist")()).cast<std::string>() + ")";
      });
}

}  // namespace bn1d_python
