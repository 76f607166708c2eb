# SPDX-License-Identifier: MIT
"""State files without the safetensors package: save_file and load_file, named and shaped like
safetensors.numpy's, written and read by bn1d's C++ safetensors layer (the files C++, R and
bn1d.BatchNorm1d.save/load use)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _bn1d
from ._checks import (PathArg, encode_key, is_torch_tensor, on_file, state_value, tensor_array,
                      type_name)

# The numpy dtypes of the C++ layer (safetensors F32, F64, I64, F16), by bn1d's names.
_FILE_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64",
                np.dtype(np.int64): "int64", np.dtype(np.float16): "float16"}
_EXPECTED = "float32, float64, int64, float16 or (torch) bfloat16"


def _file_array(value: Any, key: str) -> Tuple[np.ndarray, str]:
    """value (a numpy array, a torch tensor, a number or a sequence) as a C-contiguous, aligned
    array of native byte order bn1d can write, with bn1d's name of its file dtype; a torch
    bfloat16 tensor as its bits (int16, numpy has no bfloat16). ValueError naming key and the
    dtype otherwise."""
    name = f"tensors[{key!r}]"
    if is_torch_tensor(value):
        if str(value.dtype) == "torch.bfloat16":
            import torch
            bits = tensor_array(value.detach().view(torch.int16), name, _EXPECTED, to_cpu=True)
            return np.require(bits, dtype=np.int16, requirements=["C", "A"]), "bfloat16"
        array = tensor_array(value, name, _EXPECTED, to_cpu=True)
    else:
        array = state_value(value, name)
    if isinstance(array, _bn1d.BFloat16Tensor):  # a pure bfloat16 module's state, say
        return array.bits().view(np.int16), "bfloat16"
    native = array.dtype.newbyteorder("=")
    if native not in _FILE_DTYPES:
        raise ValueError(f"{name}: expected dtype {_EXPECTED}, got {array.dtype}")
    return np.require(array, dtype=native, requirements=["C", "A"]), _FILE_DTYPES[native]


def save_file(tensors: Mapping[str, Any], filename: PathArg,
              metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes tensors (a mapping of str keys to numpy arrays or torch tensors) to the
    safetensors file filename, in the mapping's order, with the str to str metadata.

    Dtypes: float32, float64, int64 and float16 (safetensors F32, F64, I64, F16), any byte
    order, and torch bfloat16 tensors and bn1d.BFloat16Tensor (BF16, written from the bits);
    others are a ValueError naming the key and the dtype. Arrays of any strides are written as
    their C-order copies; torch tensors are read through .detach().cpu(), so a torch state_dict()
    saves as it is and loads with bn1d.BatchNorm1d.load, the C++ and R libraries, or
    load_file. The file is written to a temporary file renamed over filename: a failed write
    leaves no partial file. Errors: TypeError for a non-str key or metadata entry, ValueError
    for a key that is not valid UTF-8 or is "__metadata__", OSError (FileNotFoundError,
    PermissionError, IsADirectoryError, ...) when the file cannot be written.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors: expected a dict-like mapping, got {type_name(tensors)}")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata: expected a dict-like mapping or None, got "
                        f"{type_name(metadata)}")
    items = [(encode_key(key, "tensors key"), *_file_array(value, key))
             for key, value in tensors.items()]
    encoded_metadata = {}
    for name, value in metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata[{name!r}]: expected str, got {type_name(value)}")
        encoded_metadata[encode_key(name, "metadata key")] = encode_key(value, "metadata value")
    on_file(filename, lambda path: _bn1d.save_file(items, path, encoded_metadata))


def load_file(filename: PathArg) -> Dict[str, np.ndarray]:
    """The tensors of the safetensors file filename as a dict of new numpy arrays, in file
    order: float32, float64, int64 and float16 arrays for F32, F64, I64 and F16 tensors, and
    float32 arrays for BF16 tensors (numpy has no bfloat16; every bfloat16 value is a float32,
    so the widening is exact and torch.from_numpy(a).to(torch.bfloat16) gets the file's
    values back). A file with other dtypes is a ValueError.

    torch.from_numpy turns them into tensors that a torch module's load_state_dict takes.
    Errors: FileNotFoundError, PermissionError, IsADirectoryError or another OSError when the
    file cannot be read; ValueError when it is not a valid safetensors file (a torch.save or
    pickle file is named as such).
    """
    return on_file(filename, _bn1d.load_file)
