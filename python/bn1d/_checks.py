# SPDX-License-Identifier: MIT
"""Argument checks and conversions shared by bn1d's Python API: arrays and tensors to numpy,
options, paths and keys. Each raises TypeError for the wrong Python type and ValueError for a
bad value, naming the argument; none converts silently (no float('0.1'), no int(True))."""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar, Union

import numpy as np

from ._bn1d import BFloat16Tensor

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Result = TypeVar("Result")


def type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def is_torch_tensor(value: Any) -> bool:
    """True when value is a torch.Tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


# torch dtypes numpy can hold: the others (bfloat16, complex32, quantized) cannot be viewed.
_INPUT_DTYPES = "float32, float64, bfloat16 or float16"
_NUMPY_TORCH_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                       "uint8", "bool", "complex64", "complex128")


def tensor_array(t: Any, name: str, what: str, to_cpu: bool) -> Any:
    """A numpy view of the torch tensor t (a copy when to_cpu and it is on another device), a
    BFloat16Tensor view for bfloat16 (numpy has none); ValueError naming name for tensors bn1d
    cannot read. what: the dtypes expected, for the message."""
    import torch
    if t.layout != torch.strided:
        raise ValueError(f"{name}: expected a dense (strided) tensor, got layout {t.layout}")
    if t.is_meta:
        raise ValueError(f"{name}: expected a tensor with data, got a meta tensor")
    if t.device.type != "cpu":
        if not to_cpu:
            raise ValueError(f"{name}: expected a CPU tensor, got a tensor on {t.device}")
        t = t.detach().cpu()
    if _torch_dtype_name(t.dtype) == "bfloat16":
        return BFloat16Tensor.from_dlpack(t.detach().resolve_neg(), name)
    if _torch_dtype_name(t.dtype) not in _NUMPY_TORCH_DTYPES:
        raise ValueError(f"{name}: expected dtype {what}, got {_torch_dtype_name(t.dtype)}")
    return t.detach().resolve_conj().resolve_neg().numpy()


def as_array(x: Any, name: str = "input") -> Any:
    """A numpy view of the input x without copying where possible (a BFloat16Tensor view for
    bfloat16 tensors); TypeError for what is not an array, ValueError for arrays bn1d cannot
    read."""
    if isinstance(x, (np.ndarray, BFloat16Tensor)):
        return x
    if is_torch_tensor(x):
        return tensor_array(x, name, _INPUT_DTYPES, to_cpu=False)
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError) as e:
            numpy_error = e
        try:  # numpy has no bfloat16: such tensors are read as BFloat16Tensor
            return BFloat16Tensor.from_dlpack(x, name)
        except (BufferError, RuntimeError, TypeError, ValueError):
            raise ValueError(f"{name}: cannot be read through __dlpack__ ({numpy_error})") \
                from None
    if (x is None or isinstance(x, (str, bytes, bytearray, Mapping, set, frozenset))
            or not (hasattr(x, "__array__") or hasattr(x, "__array_interface__")
                    or isinstance(x, (list, tuple, numbers.Number)))):
        raise TypeError(f"{name}: expected a numpy array or a tensor, got {type_name(x)}")
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be converted to an array ({e})") from None


def state_value(v: Any, name: str) -> Any:
    """A state value as a numpy array (a BFloat16Tensor for bfloat16): numpy arrays as they are,
    torch tensors through .detach().cpu(), numbers and sequences through np.asarray; ValueError
    naming name for what cannot be read."""
    if isinstance(v, (np.ndarray, BFloat16Tensor)):
        return v
    if is_torch_tensor(v):
        return tensor_array(v, name, "float32, float64, bfloat16, float16 or int64", to_cpu=True)
    if isinstance(v, (str, bytes, bytearray, Mapping)):
        raise TypeError(f"{name}: expected an array or a tensor, got {type_name(v)}")
    try:
        return np.asarray(v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be converted to an array ({e})") from None


def dtype_name(dtype: Any) -> str:
    """The numpy name of dtype (a name, a numpy dtype or scalar type, a torch dtype); TypeError
    for what is not a dtype."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dtype, torch.dtype):
        return _torch_dtype_name(dtype)
    if not isinstance(dtype, (str, np.dtype, type)):
        raise TypeError(f"dtype: expected a dtype, got {type_name(dtype)}")
    try:
        return np.dtype(dtype).name
    except Exception:  # noqa: BLE001 -- numpy raises several types for bad names
        if isinstance(dtype, str):
            return dtype  # bn1d names what it expects
        raise TypeError(f"dtype: expected a dtype, got {dtype!r}") from None


def check_flag(name: str, value: Any) -> bool:
    """value as a bool: bools (Python or numpy) only, TypeError naming name otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {type_name(value)}")


def check_real(name: str, value: Any, none_ok: bool = False) -> Optional[float]:
    """value as a float: real numbers (not bools, not complex, not strings); None when none_ok.
    TypeError naming name otherwise, ValueError for an int too large for a float."""
    if value is None and none_ok:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{name}: expected a finite value, got {value}") from None
    expected = "a real number or None" if none_ok else "a real number"
    raise TypeError(f"{name}: expected {expected}, got {type_name(value)}")


ACTIVATIONS = ("relu", "leaky_relu")


def check_activation(activation: Any, negative_slope: Any) -> tuple[str, float]:
    """(activation, negative_slope) for the compiled module: activation None, "relu" or
    "leaky_relu" ("none" for None), negative_slope a finite real number. TypeError for other
    types, ValueError for other values, naming the argument."""
    expected = 'None, "relu" or "leaky_relu"'
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"activation: expected {expected}, got {type_name(activation)}")
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected {expected}, got {activation!r}")
    slope = check_real("negative_slope", negative_slope)
    if not math.isfinite(slope):
        raise ValueError(f"negative_slope: expected a finite real number, got {negative_slope}")
    return ("none" if activation is None else activation), slope


def check_int(name: str, value: Any) -> int:
    """value as an int: integers (Python or numpy, not bools) that fit in 64 bits."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type_name(value)}")
    if not -2**63 <= int(value) < 2**63:
        raise ValueError(f"{name}: expected a 64-bit integer, got {value}")
    return int(value)


def encode_path(path: Any, name: str = "path") -> bytes:
    """path (str, bytes or os.PathLike) as bytes for the C++ library; ValueError for an embedded
    NUL (as open() does), TypeError for what is not a path."""
    try:
        encoded = os.fsencode(path)
    except TypeError:
        raise TypeError(f"{name}: expected str, bytes or os.PathLike, got {type_name(path)}") \
            from None
    if b"\0" in encoded:
        raise ValueError(f"{name}: embedded null character")
    return encoded


def on_file(path: Any, call: Callable[[bytes], Result]) -> Result:
    """call(path as bytes); an OSError that carries an errno (FileNotFoundError,
    PermissionError, IsADirectoryError, ...) gets path as its filename, as open() gives."""
    encoded = encode_path(path)
    try:
        return call(encoded)
    except OSError as e:
        if e.errno is not None and e.filename is None:
            e.filename = os.fspath(path)
        raise


def encode_key(key: Any, name: str) -> bytes:
    """A state-dict key or prefix as UTF-8 bytes (surrogate escapes as the bytes they stand
    for); TypeError for what is not a str."""
    if not isinstance(key, str):
        raise TypeError(f"{name}: expected str, got {type_name(key)}")
    return key.encode("utf-8", "surrogateescape")


def _position_array(value: Any, name: str) -> np.ndarray:
    """value (a numpy array, a torch tensor on any device, a sequence) as a numpy array;
    TypeError naming name for what is not an array."""
    if is_torch_tensor(value):
        return value.detach().cpu().resolve_conj().resolve_neg().numpy()
    if isinstance(value, (str, bytes, bytearray, Mapping, set, frozenset, numbers.Number)):
        raise TypeError(f"{name}: expected an array or a tensor, got {type_name(value)}")
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be converted to an array ({e})") from None


def as_lengths(lengths: Any) -> np.ndarray:
    """lengths as a new C-contiguous 1-D int64 array: integer values only (TypeError naming
    lengths for floats, bools and other dtypes; ValueError for another shape or values beyond
    int64). The range [0, L] is checked by the C++ library."""
    a = _position_array(lengths, "lengths")
    if a.size == 0 and a.dtype.kind in "fiu":  # np.asarray([]) is float64
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integer values, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"lengths: expected a 1-D array of N values, got shape {list(a.shape)}")
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"lengths: expected values below 2**63, got {a.max()}")
    return np.array(a, dtype=np.int64, order="C")  # a copy: callers may change theirs later


def as_mask(mask: Any) -> np.ndarray:
    """mask as a new C-contiguous (N, L) bool array: bool values only (TypeError naming mask for
    other dtypes, ValueError for another number of dimensions)."""
    a = _position_array(mask, "mask")
    if a.dtype.kind != "b":
        raise TypeError(f"mask: expected a bool array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"mask: expected a 2-D (N, L) array, got shape {list(a.shape)}")
    return np.array(a, order="C")  # a copy: callers may change theirs later


def valid_positions(lengths: Any, mask: Any) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(lengths, mask) checked and converted (as_lengths, as_mask), None where not given;
    ValueError when both are given."""
    if lengths is not None and mask is not None:
        raise ValueError("lengths, mask: expected at most one of them, got both")
    return (None if lengths is None else as_lengths(lengths),
            None if mask is None else as_mask(mask))
