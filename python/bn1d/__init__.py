# SPDX-License-Identifier: MIT
"""bn1d: exact, fast BatchNorm1d — a drop-in for torch.nn.BatchNorm1d on numpy arrays.

    import numpy as np, bn1d
    m = bn1d.BatchNorm1d(100)
    y = m(np.random.randn(20, 100).astype(np.float32))
    grad_input, grad_weight, grad_bias = m.backward(np.ones_like(y))

Inputs are numpy arrays (float32 or float64, the module's dtype, any strides: used without a
copy) or objects with ``__dlpack__`` such as CPU torch tensors (also without a copy). Outputs are
numpy arrays. ``weight``, ``bias``, ``running_mean`` and ``running_var`` are writable numpy views
of the module's own storage. Errors are ``ValueError`` for bad values (dtype, layout, device,
shape, range: the C++ library's message, or one naming the argument) and ``TypeError`` for
arguments of the wrong Python type; a file that cannot be opened, read or written (``save``,
``load``) is an ``OSError``; a path with an embedded NUL is a ValueError, as for open().
Setters check, never convert: ``training`` takes a bool, ``eps`` a real number, ``momentum`` a
real number or None (both rebuild the C++ module's options, keeping parameters, buffers, views,
count and mode; what the last forward saved for backward is dropped); ``num_features``,
``affine``, ``track_running_stats`` and ``dtype`` are fixed at construction.
"""

import numbers
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from . import _bn1d

__all__ = ["BatchNorm1d"]


def _type_name(v):
    return "None" if v is None else type(v).__name__


def _torch_tensor(x):
    """True when @p x is a torch.Tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_dtype_name(dtype):
    return str(dtype).replace("torch.", "")


# torch dtypes numpy can hold: the others (bfloat16, complex32, quantized) cannot be viewed.
_NUMPY_TORCH_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                       "uint8", "bool", "complex64", "complex128")


def _tensor_array(t, name, what, to_cpu):
    """A numpy view of the torch tensor @p t (a copy when @p to_cpu and it is on another
    device); ValueError naming @p name for tensors bn1d cannot read. @p what: the dtypes
    expected, for the message."""
    import torch
    if t.layout != torch.strided:
        raise ValueError(f"{name}: expected a dense (strided) tensor, got layout {t.layout}")
    if t.is_meta:
        raise ValueError(f"{name}: expected a tensor with data, got a meta tensor")
    if t.device.type != "cpu":
        if not to_cpu:
            raise ValueError(f"{name}: expected a CPU tensor, got a tensor on {t.device}")
        t = t.detach().cpu()
    if _torch_dtype_name(t.dtype) not in _NUMPY_TORCH_DTYPES:
        raise ValueError(f"{name}: expected dtype {what}, got {_torch_dtype_name(t.dtype)}")
    return t.detach().resolve_conj().resolve_neg().numpy()


def _as_array(x, name="input"):
    """A numpy view of the input @p x without copying where possible; TypeError for what is not
    an array, ValueError for arrays bn1d cannot read."""
    if isinstance(x, np.ndarray):
        return x
    if _torch_tensor(x):
        return _tensor_array(x, name, "float32 or float64", to_cpu=False)
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError) as e:
            raise ValueError(f"{name}: cannot be read through __dlpack__ ({e})") from None
    if (x is None or isinstance(x, (str, bytes, bytearray, Mapping, set, frozenset))
            or not (hasattr(x, "__array__") or hasattr(x, "__array_interface__")
                    or isinstance(x, (list, tuple, numbers.Number)))):
        raise TypeError(f"{name}: expected a numpy array or a tensor, got {_type_name(x)}")
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be converted to an array ({e})") from None


def _state_value(v, name):
    """A state value as a numpy array: numpy arrays as they are, torch tensors through
    .detach().cpu(), numbers and sequences through np.asarray; ValueError naming @p name for
    what cannot be read."""
    if isinstance(v, np.ndarray):
        return v
    if _torch_tensor(v):
        return _tensor_array(v, name, "float32, float64 or int64", to_cpu=True)
    if isinstance(v, (str, bytes, bytearray, Mapping)):
        raise TypeError(f"{name}: expected an array or a tensor, got {_type_name(v)}")
    try:
        return np.asarray(v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be converted to an array ({e})") from None


def _dtype_name(dtype):
    """The numpy name of @p dtype (a name, a numpy dtype or scalar type, a torch dtype); TypeError
    for what is not a dtype."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dtype, torch.dtype):
        return str(dtype)[len("torch."):]
    if not isinstance(dtype, (str, np.dtype, type)):
        raise TypeError(f"dtype: expected a dtype, got {_type_name(dtype)}")
    try:
        return np.dtype(dtype).name
    except Exception:  # noqa: BLE001 -- numpy raises several types for bad names
        if isinstance(dtype, str):
            return dtype  # bn1d names what it expects
        raise TypeError(f"dtype: expected a dtype, got {dtype!r}") from None


def _check_flag(name, value):
    """@p value as a bool: bools (Python or numpy) only, TypeError naming @p name otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {_type_name(value)}")


def _check_real(name, value, none_ok=False):
    """@p value as a float: real numbers (not bools, not complex, not strings); None when
    @p none_ok. TypeError naming @p name otherwise."""
    if value is None and none_ok:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{name}: expected a finite value, got {value}") from None
    expected = "a real number or None" if none_ok else "a real number"
    raise TypeError(f"{name}: expected {expected}, got {_type_name(value)}")


def _path(path, name="path"):
    """@p path (str, bytes or os.PathLike) as bytes for the C++ library; ValueError for an
    embedded NUL (as open() does), TypeError for what is not a path."""
    try:
        path = os.fsencode(path)
    except TypeError:
        raise TypeError(f"{name}: expected str, bytes or os.PathLike, got {_type_name(path)}") \
            from None
    if b"\0" in path:
        raise ValueError(f"{name}: embedded null character")
    return path


def _key(key, name):
    """A state-dict key or prefix as UTF-8 bytes (surrogate escapes as the bytes they stand
    for); TypeError for what is not a str."""
    if not isinstance(key, str):
        raise TypeError(f"{name}: expected str, got {_type_name(key)}")
    return key.encode("utf-8", "surrogateescape")


class BatchNorm1d:
    """Batch normalization over (N, C) or (N, C, L) inputs, as torch.nn.BatchNorm1d.

    Args mirror torch's; ``dtype`` ("float32" or "float64", or a numpy/torch dtype) is the dtype
    of the parameters and buffers and of the inputs the module accepts.
    """

    def __init__(self, num_features, eps=1e-05, momentum=0.1, affine=True,
                 track_running_stats=True, dtype="float32"):
        self._check_int("num_features", num_features)
        self._m = _bn1d.BatchNorm1d(int(num_features), _check_real("eps", eps),
                                    _check_real("momentum", momentum, none_ok=True),
                                    _check_flag("affine", affine),
                                    _check_flag("track_running_stats", track_running_stats),
                                    _dtype_name(dtype))
        # As given, for repr (torch prints what it was given).
        self._given = {"num_features": num_features, "eps": eps, "momentum": momentum}

    # ---- options: fixed at construction, except eps and momentum -------------------------
    @property
    def num_features(self):
        return self._given["num_features"]

    @property
    def affine(self):
        return self._m.affine

    @property
    def track_running_stats(self):
        return self._m.track_running_stats

    def _fixed(name, check):  # noqa: N805 -- a setter factory used in the class body
        """A setter for an option bn1d fixes at construction: the current value is accepted
        (nothing changes), another one is a ValueError, another type a TypeError."""
        def setter(self, value):
            check(name, value)
            if value != getattr(self, name):
                raise ValueError(f"{name}: fixed at construction (is {getattr(self, name)}, "
                                 f"got {value}); build a new BatchNorm1d")
        return setter

    def _check_int(name, value):  # noqa: N805
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected an int, got {_type_name(value)}")
        if not -2**63 <= int(value) < 2**63:
            raise ValueError(f"{name}: expected a 64-bit integer, got {value}")

    num_features = num_features.setter(_fixed("num_features", _check_int))
    affine = affine.setter(_fixed("affine", _check_flag))
    track_running_stats = track_running_stats.setter(_fixed("track_running_stats", _check_flag))
    del _fixed
    _check_int = staticmethod(_check_int)

    @property
    def eps(self):
        return self._given["eps"]

    @eps.setter
    def eps(self, value):
        """A real number >= 0 (TypeError, ValueError otherwise). What the last forward saved for
        backward is dropped (call forward again)."""
        self._m.set_options(_check_real("eps", value), self._m.momentum)
        self._given["eps"] = value

    @property
    def momentum(self):
        return self._given["momentum"]

    @momentum.setter
    def momentum(self, value):
        """A real number in [0, 1], or None for a cumulative average (TypeError, ValueError
        otherwise). What the last forward saved for backward is dropped."""
        self._m.set_options(self._m.eps, _check_real("momentum", value, none_ok=True))
        self._given["momentum"] = value

    # ---- mode ----------------------------------------------------------------------------
    @property
    def training(self):
        return self._m.training

    @training.setter
    def training(self, mode):
        self._m.training = _check_flag("training", mode)

    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self._m.training = mode
        return self

    def eval(self):
        return self.train(False)

    @property
    def dtype(self):
        return np.dtype(self._m.dtype)

    @dtype.setter
    def dtype(self, value):
        """Fixed at construction: the module's dtype is accepted (nothing changes), another
        dtype is a ValueError, what is not a dtype a TypeError."""
        name = _dtype_name(value)
        try:
            dtype = np.dtype(name)
        except TypeError:
            raise ValueError(f"dtype: expected float32 or float64, got {name}") from None
        if dtype != self.dtype:
            raise ValueError(f"dtype: fixed at construction (is {self.dtype}, got {dtype}); "
                             "build a new BatchNorm1d")

    # ---- compute -------------------------------------------------------------------------
    def forward(self, input):
        """Normalizes @p input; keeps it (no copy) for backward()."""
        return self._m.forward(_as_array(input, "input"))

    __call__ = forward

    def infer(self, input):
        """Normalizes @p input with the running statistics (batch statistics when the module
        does not track them), whatever the mode, changing nothing."""
        return self._m.infer(_as_array(input, "input"))

    def backward(self, grad_output):
        """(grad_input, grad_weight, grad_bias) of the last forward(); None where torch has
        None (no weight and bias without affine)."""
        return self._m.backward(_as_array(grad_output, "grad_output"))

    # ---- parameters and buffers: writable views of the module's storage -------------------
    def _set(self, name, value):
        """Copies @p value into the module's @p name: an array (numpy, tensor, sequence) of
        real numbers (float, int or uint dtype) of exactly its shape; no broadcasting, no
        complex, bool, object or string values."""
        view = getattr(self._m, name)
        if view is None:
            raise ValueError(f"{name}: the module has no {name}")
        if value is None or isinstance(value, (numbers.Number, np.generic)):
            raise TypeError(f"{name}: expected an array of shape {list(view.shape)}, "
                            f"got {_type_name(value)}")
        value = _state_value(value, name)
        if value.dtype.kind not in "fiu":
            raise ValueError(f"{name}: expected a real (float or integer) array, got dtype "
                             f"{value.dtype}")
        if value.shape != view.shape:
            raise ValueError(f"{name}: expected shape {list(view.shape)}, "
                             f"got {list(value.shape)}")
        view[...] = value

    weight = property(lambda self: self._m.weight, lambda self, v: self._set("weight", v))
    bias = property(lambda self: self._m.bias, lambda self, v: self._set("bias", v))
    running_mean = property(lambda self: self._m.running_mean,
                            lambda self, v: self._set("running_mean", v))
    running_var = property(lambda self: self._m.running_var,
                           lambda self, v: self._set("running_var", v))

    @property
    def num_batches_tracked(self):
        return self._m.num_batches_tracked if self.track_running_stats else None

    @num_batches_tracked.setter
    def num_batches_tracked(self, value):
        """An int >= 0 (TypeError, ValueError otherwise; a module without running statistics
        has no count)."""
        if not self.track_running_stats:
            raise ValueError("num_batches_tracked: the module has no num_batches_tracked")
        if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iu":
            value = value[()]
        self._check_int("num_batches_tracked", value)
        self._m.load_state_dict([(b"num_batches_tracked", np.asarray(value, np.int64))], False)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self):
        """weight, bias, running_mean, running_var, num_batches_tracked (copies; the count as a
        0-d int64 array), in torch's order, those that exist."""
        return OrderedDict(self._m.state_dict().items())

    def load_state_dict(self, state_dict, strict=True):
        """Copies the entries of @p state_dict (a mapping of str keys to numpy arrays or torch
        tensors) into the module. Wrong shapes or dtypes are errors (no silent conversion); on
        error nothing changes. Unexpected keys are reported (@p strict) or ignored; their values
        are never read."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict-like mapping, got "
                            f"{_type_name(state_dict)}")
        strict = _check_flag("strict", strict)
        known = set()
        if self.affine:
            known |= {"weight", "bias"}
        if self.track_running_stats:
            known |= {"running_mean", "running_var", "num_batches_tracked"}
        unread = np.empty(0, np.int64)  # stands for an unexpected key's value
        items = []
        for k, v in state_dict.items():
            key = _key(k, "state_dict key")
            items.append((key, _state_value(v, f"state_dict[{k!r}]") if k in known else unread))
        self._m.load_state_dict(items, strict)

    def save(self, path):
        """Saves state_dict() as a safetensors file (OSError when it cannot be written)."""
        self._m.save(_path(path))

    def load(self, path, prefix=""):
        """Loads the entries ``prefix + key`` of a safetensors file, strictly (OSError when it
        cannot be read, ValueError when it is malformed or does not fit the module)."""
        self._m.load(_path(path), _key(prefix, "prefix"))

    def reset_parameters(self):
        self._m.reset_parameters()

    def reset_running_stats(self):
        self._m.reset_running_stats()

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def __repr__(self):
        return f"BatchNorm1d({self.extra_repr()})"
