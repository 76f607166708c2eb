# SPDX-License-Identifier: MIT
"""Copies of a module's options and state between bn1d.BatchNorm1d (numpy) and torch's
BatchNorm1d; bn1d.torch.to_torch and bn1d.torch.from_torch are the public names."""

import numpy as np
import torch

from . import BatchNorm1d as Bn1dModule

_PARAMETERS = ("weight", "bias")
_BUFFERS = ("running_mean", "running_var")
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}
_DTYPE_NAMES = "float32, float64, bfloat16 or float16"


def _type_name(v):
    """The class of v with its module (torch's and bn1d's BatchNorm1d share a name)."""
    if v is None:
        return "None"
    cls = type(v)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def to_torch(module, torch_class):
    """A torch_class (a torch.nn.BatchNorm1d class) with the options, training flag and a copy
    of the state of the bn1d.BatchNorm1d module."""
    if not isinstance(module, Bn1dModule):
        raise TypeError(f"module: expected a bn1d.BatchNorm1d, got {_type_name(module)}")
    new = torch_class(module.num_features, eps=module.eps, momentum=module.momentum,
                      affine=module.affine, track_running_stats=module.track_running_stats,
                      dtype=_DTYPES[str(module.dtype)], activation=module.activation,
                      negative_slope=module.negative_slope)
    # torch copies the values into the new module's own parameters and buffers.
    new.load_state_dict({k: torch.from_numpy(v) if isinstance(v, np.ndarray)
                         else torch.from_dlpack(v) for k, v in module.state_dict().items()})
    return new.train(module.training)


def _state_dtype(module, dtype):
    """The dtype name of the bn1d module to build: dtype when given (a torch.dtype or
    "float32", "float64", "bfloat16", "float16"), else the dtype of the module's parameters and
    buffers (float32 when it has none). ValueError for other or mixed dtypes."""
    tensors = {name: getattr(module, name) for name in _PARAMETERS + _BUFFERS
               if getattr(module, name) is not None}
    found = {name: str(t.dtype).replace("torch.", "") for name, t in tensors.items()}
    for name, found_dtype in found.items():
        if found_dtype not in _DTYPES:
            raise ValueError(f"module.{name}: expected dtype {_DTYPE_NAMES}, got "
                             f"{found_dtype}")
    if dtype is not None:
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).replace("torch.", "")
        elif not isinstance(dtype, str):
            raise TypeError(f"dtype: expected a str or a torch.dtype, got {_type_name(dtype)}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: expected {_DTYPE_NAMES}, got {dtype}")
    elif found:
        dtype = next(iter(found.values()))
    else:
        dtype = "float32"
    for name, found_dtype in found.items():
        if found_dtype != dtype:
            raise ValueError(f"module.{name}: expected dtype {dtype} (the module's), got "
                             f"{found_dtype}; convert the module first (.float(), .double(), "
                             f".bfloat16() or .half())")
    return dtype


def _check_present(module):
    """ValueError when the module's parameters and buffers are not the ones its options say
    (set to None or added by hand), which bn1d.BatchNorm1d cannot represent."""
    expected = {name: module.affine for name in _PARAMETERS}
    expected.update({name: module.track_running_stats
                     for name in _BUFFERS + ("num_batches_tracked",)})
    for name, present in expected.items():
        value = getattr(module, name)
        if (value is not None) != present:
            flag = "affine" if name in _PARAMETERS else "track_running_stats"
            raise ValueError(f"module.{name}: expected {'a tensor' if present else 'None'} "
                             f"({flag}={getattr(module, flag)}), got {_type_name(value)}")


def from_torch(module, dtype=None, with_activation=True):
    """A bn1d.BatchNorm1d with the options, training flag and a copy of the state of module, a
    torch.nn.BatchNorm1d (any subclass); its fused activation too unless not with_activation
    (fold needs the batch norm alone)."""
    if not isinstance(module, torch.nn.BatchNorm1d):
        raise TypeError(f"module: expected a torch.nn.BatchNorm1d or bn1d.torch.BatchNorm1d, "
                        f"got {_type_name(module)}")
    _check_present(module)
    new = Bn1dModule(module.num_features, eps=module.eps, momentum=module.momentum,
                     affine=module.affine, track_running_stats=module.track_running_stats,
                     dtype=_state_dtype(module, dtype),
                     activation=getattr(module, "activation", None) if with_activation else None,
                     negative_slope=getattr(module, "negative_slope", 0.01))
    state = {}
    for name in _PARAMETERS + _BUFFERS + ("num_batches_tracked",):
        tensor = getattr(module, name)
        if tensor is None:
            continue
        if tensor.is_meta:
            raise ValueError(f"module.{name}: expected a tensor with data, got a meta tensor")
        state[name] = tensor.detach().cpu()  # no copy for CPU tensors
    new.load_state_dict(state)  # copies; shapes and dtypes checked by bn1d
    return new.train(module.training)
