// SPDX-License-Identifier: MIT
// numpy arrays <-> bn1d::Tensor for the _bn1d extension: zero-copy views of numpy arrays (any
// strides), numpy views of bn1d tensors, and the result buffers bn1d writes into.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <bn1d/bn1d.hpp>

#include <optional>
#include <string>
#include <utility>

namespace bn1d_python {

// The bn1d dtype of a numpy dtype, or nullopt when bn1d has none (non-native byte order too).
std::optional<bn1d::DType> bn1d_dtype(const pybind11::dtype& dt);
// The numpy dtype of a bn1d dtype; Error for bfloat16 (numpy has none).
pybind11::dtype numpy_dtype(bn1d::DType dtype);
// numpy's name of @p dt ("float32", ">f4", ...), for messages.
std::string numpy_dtype_name(const pybind11::dtype& dt);

// A zero-copy, read-only bn1d view of @p a (any strides); Error naming @p name when bn1d cannot
// read it. The array must stay alive while bn1d uses it.
bn1d::Tensor wrap(const pybind11::array& a, const char* name);
// The bn1d view of @p x that bn1d may write into: a writable numpy array (Error naming @p name
// for a read-only one) or a BFloat16Tensor.
bn1d::Tensor writable_tensor_of(const pybind11::object& x, const char* name);
// A numpy array over the memory of @p t, kept alive by @p base.
pybind11::array view_of(const bn1d::Tensor& t, pybind11::handle base);
// A numpy array sharing the storage of @p t (a Tensor copy keeps it alive), a BFloat16Tensor
// for bfloat16; None if undefined.
pybind11::object to_numpy(const bn1d::Tensor& t);
// The bn1d view of @p x, a numpy array (see wrap) or a BFloat16Tensor (sharing its memory).
bn1d::Tensor tensor_of(const pybind11::object& x, const char* name);
// A result buffer like @p like: the Python object (a new C-contiguous numpy array, or a
// BFloat16Tensor) and bn1d's writable view of it.
std::pair<pybind11::object, bn1d::Tensor> empty_like(const pybind11::object& like,
                                                     const char* name);
// What bn1d wrote into: @p out when bn1d reused its buffer @p given, else its new tensor.
pybind11::object result(const pybind11::object& out, const bn1d::Tensor& given,
                        const bn1d::Tensor& written);

// The valid positions of lengths (a C-contiguous 1-D int64 array) or mask (a C-contiguous 2-D
// bool array): exactly one of them is not None (the Python layer checks and converts).
bn1d::ValidPositions valid_positions(const pybind11::object& lengths, const pybind11::object& mask);

}  // namespace bn1d_python
