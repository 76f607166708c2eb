// SPDX-License-Identifier: MIT
// BFloat16Tensor: how bfloat16 tensors cross into and out of the _bn1d extension. numpy has no
// bfloat16, so bf16 inputs come through DLPack (torch tensors, without a copy) and bf16 outputs,
// parameters and gradients go out as this class, which torch.from_dlpack takes without a copy.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <bn1d/bn1d.hpp>

#include <memory>

namespace bn1d_python {

// A bfloat16 bn1d::Tensor (owned, a view of a module's storage, or a view of memory imported
// through DLPack, kept alive by @c imported) as a Python object.
struct BFloat16Tensor {
  bn1d::Tensor tensor;
  std::shared_ptr<void> imported;  // the DLManagedTensor the memory belongs to, if any
};

// Registers the class BFloat16Tensor and the function from_dlpack in @p mod.
void def_bfloat16_tensor(pybind11::module_& mod);

}  // namespace bn1d_python
