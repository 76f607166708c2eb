# SPDX-License-Identifier: MIT
"""State files without the safetensors package: save_file and load_file, named and shaped like
safetensors.numpy's, written and read by bn1d's C++ safetensors layer (the files C++, R and
bn1d.BatchNorm1d.save/load use)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional

import numpy as np

from . import _bn1d
from ._checks import PathArg, encode_key, on_file, state_value, type_name

# The dtypes of the C++ layer (safetensors F32, F64, I64).
_FILE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64))


def _file_array(value: Any, key: str) -> np.ndarray:
    """value (a numpy array, a torch tensor, a number or a sequence) as a C-contiguous, aligned
    array of native byte order bn1d can write; ValueError naming key and the dtype otherwise."""
    name = f"tensors[{key!r}]"
    array = state_value(value, name)
    native = array.dtype.newbyteorder("=")
    if native not in _FILE_DTYPES:
        raise ValueError(f"{name}: expected dtype float32, float64 or int64, got {array.dtype}")
    return np.require(array, dtype=native, requirements=["C", "A"])


def save_file(tensors: Mapping[str, Any], filename: PathArg,
              metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes tensors (a mapping of str keys to numpy arrays or torch tensors) to the
    safetensors file filename, in the mapping's order, with the str to str metadata.

    Dtypes: float32, float64 and int64 (safetensors F32, F64, I64), any byte order; others are
    a ValueError naming the key and the dtype. Arrays of any strides are written as their
    C-order copies; torch tensors are read through .detach().cpu(), so a torch state_dict()
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
    items = [(encode_key(key, "tensors key"), _file_array(value, key))
             for key, value in tensors.items()]
    encoded_metadata = {}
    for name, value in metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata[{name!r}]: expected str, got {type_name(value)}")
        encoded_metadata[encode_key(name, "metadata key")] = encode_key(value, "metadata value")
    on_file(filename, lambda path: _bn1d.save_file(items, path, encoded_metadata))


def load_file(filename: PathArg) -> Dict[str, np.ndarray]:
    """The tensors of the safetensors file filename as a dict of new numpy arrays, in file
    order (float32, float64 or int64 arrays; a file with other dtypes is a ValueError).

    torch.from_numpy turns them into tensors that a torch module's load_state_dict takes.
    Errors: FileNotFoundError, PermissionError, IsADirectoryError or another OSError when the
    file cannot be read; ValueError when it is not a valid safetensors file (a torch.save or
    pickle file is named as such).
    """
    return on_file(filename, _bn1d.load_file)
