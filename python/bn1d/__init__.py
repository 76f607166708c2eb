# SPDX-License-Identifier: MIT
"""bn1d: exact, fast BatchNorm1d — a drop-in for torch.nn.BatchNorm1d on numpy arrays.

    import numpy as np, bn1d
    m = bn1d.BatchNorm1d(100)
    y = m(np.random.randn(20, 100).astype(np.float32))
    grad_input, grad_weight, grad_bias = m.backward(np.ones_like(y))

Padded sequences: ``m(x, lengths=lengths)`` or ``m(x, mask=mask)`` normalizes an (N, C, L)
batch over its valid positions only (torch.nn.BatchNorm1d on the packed valid values), 0 at the
padding. Virtual batches (ghost batch norm, TabNet's GBN): ``bn1d.GhostBatchNorm1d(C,
virtual_batch_size=128)``, the loop over ``x.chunk(ceil(N / virtual_batch_size))`` in one call.
``bn1d.functional.batch_norm`` is torch.nn.functional.batch_norm (with lengths= and mask=).
Fused activation: ``bn1d.BatchNorm1d(C, activation="relu")`` (or "leaky_relu" with
``negative_slope=0.01``) computes relu(bn(x)) in the normalizing pass, and its backward gates
grad_output by the activation's derivative in the same passes: torch's ``relu(bn(x))`` /
``leaky_relu(bn(x), negative_slope)``, outputs and gradients (0 at 0 for ReLU, as torch).

Inputs are numpy arrays (any strides: used without a copy) or objects with ``__dlpack__`` such
as CPU torch tensors (also without a copy). Outputs are numpy arrays. ``weight``, ``bias``,
``running_mean`` and ``running_var`` are writable numpy views of the module's own storage.

16-bit floats: a float32 or float64 module also takes float16 and bfloat16 inputs (mixed
precision, as torch's ``BatchNorm1d(C)(x.bfloat16())``): the output and grad_input have the
input's dtype, the parameters, running statistics and their gradients the module's. A module
built with dtype="float16" or "bfloat16" is pure: parameters, buffers, inputs and outputs all
of that dtype. Statistics are accumulated in float64 and each output rounded once. numpy has
float16 but no bfloat16: bfloat16 inputs come as torch tensors (or any ``__dlpack__`` object),
and bfloat16 outputs, gradients, parameters and buffers are ``BFloat16Tensor`` objects:
``torch.from_dlpack(t)`` shares their memory, ``t.numpy()`` / ``np.asarray(t)`` widen them
exactly to float32, and a pure bfloat16 module's parameters are assigned from torch bfloat16
tensors (copied bit for bit) or real arrays (rounded once to bfloat16).

Attributes behave as torch's: ``eps`` and ``momentum`` (a real number, or None for a cumulative
average) are live and take effect on the next call; they are checked on assignment, never
converted, and a bad value (TypeError, ValueError) changes nothing. ``num_features``,
``affine``, ``track_running_stats`` and ``dtype`` are fixed at construction: assigning any of
them is an AttributeError. ``dtype`` may be given as "float32", "float64", "bfloat16" or
"float16", a numpy dtype or scalar type (np.float32, np.float16) or a torch dtype
(torch.float32, torch.bfloat16).

Modules pickle (any protocol) and copy: ``pickle``, ``copy.deepcopy`` and ``copy.copy``
give an independent module with the same options (the same repr), dtype, parameters, buffers,
count and training flag; ``copy.copy`` is a deep copy too (a module owns its storage). What
forward saved for backward is not copied: call forward again before backward.

``load_state_dict`` returns torch's ``IncompatibleKeys(missing_keys, unexpected_keys)``; with
``strict=False`` missing entries keep their values and unexpected ones are ignored.
``save_file(tensors, path)`` / ``load_file(path)`` read and write safetensors files without the
safetensors package (numpy arrays or torch tensors in, numpy arrays out), the format of
``BatchNorm1d.save`` / ``load`` and of bn1d's C++ and R libraries.

Errors are ``ValueError`` for bad values (dtype, layout, device, shape, range: the C++ library's
message, or one naming the argument) and ``TypeError`` for arguments of the wrong Python type; a
file that cannot be opened, read or written is an ``OSError`` of the system's class
(FileNotFoundError, PermissionError, IsADirectoryError, ...) with ``filename`` set; a file that is
not safetensors (a torch.save or pickle file, say) is a ValueError saying so; a path with an
embedded NUL is a ValueError, as for open().
"""

import numbers
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import _bn1d
from . import functional
from ._bn1d import BFloat16Tensor
from ._checks import (PathArg, as_array, check_activation, check_flag, check_int, check_real,
                      dtype_name, encode_key, on_file, state_value, type_name, valid_positions)
from ._fold import fold_into_following, fold_into_preceding
from ._state_files import load_file, save_file

try:
    from ._version import __version__
except ImportError:  # a build without the generated _version.py: the compiled module's
    __version__ = _bn1d.__version__

if TYPE_CHECKING:
    import torch

__all__ = ["BatchNorm1d", "GhostBatchNorm1d", "BFloat16Tensor", "IncompatibleKeys", "functional",
           "fold_into_preceding", "fold_into_following", "load_file", "save_file", "__version__"]

ArrayLike = Union[np.ndarray, "torch.Tensor"]
DTypeLike = Union[str, np.dtype, type, "torch.dtype"]


class IncompatibleKeys(NamedTuple):
    """What load_state_dict did not match, as torch's _IncompatibleKeys: the module's keys the
    state dict lacks and the state dict's keys the module does not have."""

    missing_keys: List[str]
    unexpected_keys: List[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (f"IncompatibleKeys(missing_keys={self.missing_keys!r}, "
                f"unexpected_keys={self.unexpected_keys!r})")

    __str__ = __repr__


def _state_dict_version(state_dict: Any) -> Optional[int]:
    """The version torch's state_dict() records for the top module in its _metadata, or None
    (plain dicts have none)."""
    metadata = getattr(state_dict, "_metadata", None)
    local = metadata.get("") if isinstance(metadata, Mapping) else None
    version = local.get("version") if isinstance(local, Mapping) else None
    return version if isinstance(version, int) else None


def _read_only(name: str) -> property:
    """A property for an option fixed at construction: reading gives its value, assigning is an
    AttributeError."""
    def get(self: "_Module") -> Any:
        return self._given[name] if name == "num_features" else getattr(self._m, name)

    def refuse(self: "_Module", value: Any) -> None:
        raise AttributeError(f"{name}: fixed at construction (is {getattr(self, name)!r}); "
                             f"build a new {self._NAME}")
    docs = {"num_features": "The number of channels C, as given.",
            "affine": "Whether the module has a weight and a bias.",
            "track_running_stats": "Whether the module keeps running statistics.",
            "virtual_batch_size": "The number of samples of a virtual batch.",
            "split": "How a batch is split into virtual batches: 'chunk' or 'fixed'."}
    return property(get, refuse, doc=docs[name] + " Fixed at construction.")


def _tensor_property(name: str, doc: str) -> property:
    """A parameter or buffer: reading gives a writable numpy view of the module's storage (a
    BFloat16Tensor view for bfloat16), assigning copies values into it (see _Module._set)."""
    return property(lambda self: getattr(self._m, name),
                    lambda self, value: self._set(name, value), doc=doc)


class _Module:
    """What BatchNorm1d and GhostBatchNorm1d share: options, mode, backward, parameters and
    buffers, state, pickling and repr. self._m is the compiled module, self._given the options
    as given (for repr and pickling)."""

    _NAME = "BatchNorm1d"  # the class name in messages and repr
    _OPTION_KEYS = frozenset(("num_features", "eps", "momentum", "affine", "track_running_stats",
                              "dtype", "activation", "negative_slope"))

    @staticmethod
    def _rebuild(options: Dict[str, Any]) -> "_Module":
        """A new module of the class with the constructor's keyword arguments options."""
        raise NotImplementedError

    # ---- options: fixed at construction, except eps and momentum -------------------------
    num_features = _read_only("num_features")
    affine = _read_only("affine")
    track_running_stats = _read_only("track_running_stats")

    @property
    def dtype(self) -> Union[np.dtype, str]:
        """The dtype of the parameters and buffers: a numpy dtype (float32, float64, float16),
        or the str "bfloat16" (numpy has no bfloat16). Fixed at construction."""
        return "bfloat16" if self._m.dtype == "bfloat16" else np.dtype(self._m.dtype)

    @dtype.setter
    def dtype(self, value: Any) -> None:
        raise AttributeError(f"dtype: fixed at construction (is {self.dtype}); build a new "
                             f"{self._NAME}")

    @property
    def activation(self) -> Optional[str]:
        """The activation fused into the output: None, "relu" or "leaky_relu". Fixed at
        construction."""
        return None if self._m.activation == "none" else self._m.activation

    @activation.setter
    def activation(self, value: Any) -> None:
        raise AttributeError(f"activation: fixed at construction (is {self.activation!r}); "
                             f"build a new {self._NAME}")

    @property
    def negative_slope(self) -> float:
        """LeakyReLU's slope for negative values (used with activation="leaky_relu" only), as
        given. Fixed at construction."""
        return self._given.get("negative_slope", self._m.negative_slope)

    @negative_slope.setter
    def negative_slope(self, value: Any) -> None:
        raise AttributeError(f"negative_slope: fixed at construction (is "
                             f"{self.negative_slope!r}); build a new {self._NAME}")

    @property
    def eps(self) -> float:
        """The value added to the variance, as given. Assigning a real number >= 0 takes effect
        on the next call (TypeError, ValueError otherwise, changing nothing); what the last
        forward saved for backward is dropped."""
        return self._given["eps"]

    @eps.setter
    def eps(self, value: float) -> None:
        self._m.set_options(check_real("eps", value), self._m.momentum)
        self._given["eps"] = value

    @property
    def momentum(self) -> Optional[float]:
        """The running statistics' momentum, as given, or None for a cumulative average.
        Assigning a real number in [0, 1] or None takes effect on the next call (TypeError,
        ValueError otherwise, changing nothing); what the last forward saved for backward is
        dropped."""
        return self._given["momentum"]

    @momentum.setter
    def momentum(self, value: Optional[float]) -> None:
        self._m.set_options(self._m.eps, check_real("momentum", value, none_ok=True))
        self._given["momentum"] = value

    # ---- mode ----------------------------------------------------------------------------
    @property
    def training(self) -> bool:
        """True in training mode (batch statistics), False in evaluation mode; a bool."""
        return self._m.training

    @training.setter
    def training(self, mode: bool) -> None:
        self._m.training = check_flag("training", mode)

    def train(self, mode: bool = True) -> "_Module":
        """Sets training mode (mode: a bool, as torch requires) and returns the module."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self._m.training = mode
        return self

    def eval(self) -> "_Module":
        """Sets evaluation mode (the running statistics) and returns the module."""
        return self.train(False)

    def backward(self, grad_output: ArrayLike) -> Tuple[Any, Optional[Any], Optional[Any]]:
        """(grad_input, grad_weight, grad_bias) of the last forward(); None where torch has None
        (no weight and bias without affine). grad_output and grad_input have the input's dtype,
        grad_weight and grad_bias the module's. A ValueError before any forward."""
        return self._m.backward(as_array(grad_output, "grad_output"))

    # ---- parameters and buffers: writable views of the module's storage -------------------
    def _set(self, name: str, value: Any) -> None:
        """Copies value into the module's name: an array (numpy, tensor, sequence) of real
        numbers (float, int or uint dtype) of exactly its shape; no broadcasting, no complex,
        bool, object or string values. A bfloat16 module's values are copied from bfloat16
        tensors bit for bit and rounded once to bfloat16 from real arrays."""
        view = getattr(self._m, name)
        if view is None:
            raise ValueError(f"{name}: the module has no {name}")
        if value is None or isinstance(value, (numbers.Number, np.generic)):
            raise TypeError(f"{name}: expected an array of shape {list(view.shape)}, "
                            f"got {type_name(value)}")
        value = state_value(value, name)
        if isinstance(value, BFloat16Tensor) and not isinstance(view, BFloat16Tensor):
            value = value.numpy()  # exact: float32 holds every bfloat16
        if isinstance(value, BFloat16Tensor):
            self._check_shape(name, view, value)
            view.copy_(value)
            return
        if value.dtype.kind not in "fiu":
            raise ValueError(f"{name}: expected a real (float or integer) array, got dtype "
                             f"{value.dtype}")
        self._check_shape(name, view, value)
        if isinstance(view, BFloat16Tensor):
            view.copy_(BFloat16Tensor.from_float(value))
        else:
            view[...] = value

    @staticmethod
    def _check_shape(name: str, view: Any, value: Any) -> None:
        if value.shape != view.shape:
            raise ValueError(f"{name}: expected shape {list(view.shape)}, "
                             f"got {list(value.shape)}")

    weight = _tensor_property("weight", "The weight (gamma), None without affine.")
    bias = _tensor_property("bias", "The bias (beta), None without affine.")
    running_mean = _tensor_property("running_mean",
                                    "The running mean, None without track_running_stats.")
    running_var = _tensor_property("running_var",
                                   "The running variance, None without track_running_stats.")

    @property
    def num_batches_tracked(self) -> Optional[int]:
        """Training batches counted (None without running statistics). Assigning an int >= 0
        sets it (TypeError, ValueError otherwise)."""
        return self._m.num_batches_tracked if self.track_running_stats else None

    @num_batches_tracked.setter
    def num_batches_tracked(self, value: int) -> None:
        if not self.track_running_stats:
            raise ValueError("num_batches_tracked: the module has no num_batches_tracked")
        if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iu":
            value = value[()]
        check_int("num_batches_tracked", value)
        self._m.load_state_dict([(b"num_batches_tracked", np.asarray(value, np.int64))], False)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, np.ndarray]:
        """weight, bias, running_mean, running_var, num_batches_tracked (copies; the count as a
        0-d int64 array; BFloat16Tensor copies in a bfloat16 module), in torch's order, those
        that exist."""
        return OrderedDict(self._m.state_dict().items())

    def _state_keys(self) -> List[str]:
        """The keys of state_dict(), in torch's order."""
        return ((["weight", "bias"] if self.affine else [])
                + (["running_mean", "running_var", "num_batches_tracked"]
                   if self.track_running_stats else []))

    def load_state_dict(self, state_dict: Mapping[str, Any],
                        strict: bool = True) -> IncompatibleKeys:
        """Copies the entries of state_dict (a mapping of str keys to numpy arrays or torch
        tensors) into the module and returns IncompatibleKeys(missing_keys, unexpected_keys),
        as torch does.

        Wrong shapes or dtypes are errors (no silent conversion); with strict, so are missing
        and unexpected keys (ValueError); on error nothing changes. Without strict, missing
        entries keep their values and unexpected keys are ignored, their values never read.
        As in torch, a state dict without num_batches_tracked and without torch's version
        metadata (any plain dict) loads a count of 0.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict-like mapping, got "
                            f"{type_name(state_dict)}")
        strict = check_flag("strict", strict)
        known = self._state_keys()
        unread = np.empty(0, np.int64)  # stands for an unexpected key's value
        items = []
        for k, v in state_dict.items():
            key = encode_key(k, "state_dict key")
            items.append((key, state_value(v, f"state_dict[{k!r}]") if k in known else unread))
        # torch's state dicts of version 2 and later hold the count: none means "missing".
        count_missing = ("num_batches_tracked" in known and "num_batches_tracked" not in state_dict
                         and (_state_dict_version(state_dict) or 0) >= 2)
        missing = [k for k in known if k not in state_dict
                   and (k != "num_batches_tracked" or count_missing)]
        unexpected = [k for k in state_dict if k not in known]
        if count_missing:
            if strict:
                raise ValueError("Error(s) in loading state_dict for BatchNorm1d: Missing key(s) "
                                 "in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
            items.append((b"num_batches_tracked",
                          np.asarray(self._m.num_batches_tracked, np.int64)))
        self._m.load_state_dict(items, strict)
        return IncompatibleKeys(missing, unexpected)

    def save(self, path: PathArg) -> None:
        """Saves state_dict() as a safetensors file (OSError when it cannot be written)."""
        on_file(path, self._m.save)

    def load(self, path: PathArg, prefix: str = "") -> None:
        """Loads the entries prefix + key of a safetensors file, strictly (OSError when it cannot
        be read, ValueError when it is malformed, not safetensors or does not fit the
        module)."""
        encoded_prefix = encode_key(prefix, "prefix")
        on_file(path, lambda encoded: self._m.load(encoded, encoded_prefix))

    def reset_parameters(self) -> None:
        """Resets the running statistics, the weight to 1 and the bias to 0."""
        self._m.reset_parameters()

    def reset_running_stats(self) -> None:
        """Resets running_mean to 0, running_var to 1 and num_batches_tracked to 0."""
        self._m.reset_running_stats()

    # ---- pickle and copy -----------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        """The whole module as plain data: the options as given, the dtype, the training flag,
        state_dict() (copies) and any other attributes (of a subclass)."""
        return {"options": dict(self._given, affine=self.affine,
                                track_running_stats=self.track_running_stats,
                                dtype=self._m.dtype),
                "training": self.training,
                "state": self.state_dict(),
                "attributes": {k: v for k, v in vars(self).items() if k not in ("_m", "_given")}}

    _PICKLE_KEYS = frozenset(("options", "training", "state", "attributes"))

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Rebuilds the module __getstate__ described, with storage of its own. A state of
        another shape is a TypeError or ValueError naming what is wrong (and sets nothing)."""
        if not isinstance(state, dict) or set(state) != self._PICKLE_KEYS:
            got = list(state) if isinstance(state, dict) else type_name(state)
            raise ValueError(f"pickled {self._NAME}: expected a dict with keys "
                             f"{sorted(self._PICKLE_KEYS)}, got {got}")
        options, attributes = state["options"], state["attributes"]
        if not isinstance(options, dict) or not set(options) <= self._OPTION_KEYS:
            raise ValueError(f"pickled {self._NAME}: options: expected a dict with keys among "
                             f"{sorted(self._OPTION_KEYS)}, got {options!r}")
        if (not isinstance(attributes, dict) or not all(isinstance(k, str) for k in attributes)
                or {"_m", "_given"} & set(attributes)):
            raise ValueError(f"pickled {self._NAME}: attributes: expected a dict of str names "
                             "other than '_m' and '_given'")
        rebuilt = self._rebuild(options)
        rebuilt.load_state_dict(state["state"])
        rebuilt.train(state["training"])
        vars(self).update(vars(rebuilt))
        vars(self).update(attributes)

    # ---- repr ------------------------------------------------------------------------------
    def _activation_repr(self) -> str:
        """", activation=..." (and its slope for leaky_relu) when an activation is fused."""
        if self.activation is None:
            return ""
        slope = (f", negative_slope={self.negative_slope}"
                 if self.activation == "leaky_relu" else "")
        return f", activation={self.activation!r}{slope}"

    def extra_repr(self) -> str:
        """The options as torch prints them inside BatchNorm1d(...), then the activation when
        one is fused."""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}"
                f"{self._activation_repr()}")

    def __repr__(self) -> str:
        return f"{self._NAME}({self.extra_repr()})"


class BatchNorm1d(_Module):
    """Batch normalization over (N, C) or (N, C, L) inputs, as torch.nn.BatchNorm1d.

    Args mirror torch's; dtype ("float32", "float64", "bfloat16" or "float16", a numpy dtype or
    scalar type, or a torch dtype) is the dtype of the parameters and buffers. A float32 or
    float64 module takes inputs of its dtype, bfloat16 and float16 (mixed precision); a
    bfloat16 or float16 module takes inputs of its own dtype only.
    eps and momentum can be changed later; the other options are fixed. Modules pickle and
    copy (see the package's help).

    Padded batches: forward(x, lengths=...) or forward(x, mask=...) normalizes an (N, C, L)
    batch over its valid positions only (lengths: N integers, sample n valid at [0, lengths[n]);
    mask: an (N, L) bool array, True = valid). The outputs, running statistics and gradients
    at the valid positions are those of torch.nn.BatchNorm1d applied to the packed valid values
    as a (count, C) batch; the output and grad_input are 0 at every padding position.

    activation (None, "relu" or "leaky_relu", with negative_slope: a finite real number) is
    fused into the output: forward returns relu(bn(x)) or leaky_relu(bn(x), negative_slope)
    and backward() the gradients of that composition, as torch computes them (ReLU's gradient
    is 0 where bn(x) == 0). It is an option, not state: state_dict() and files are unchanged.
    """

    def __init__(self, num_features: int, eps: float = 1e-05, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: DTypeLike = "float32", activation: Optional[str] = None,
                 negative_slope: float = 0.01) -> None:
        self._m = _bn1d.BatchNorm1d(check_int("num_features", num_features),
                                    check_real("eps", eps),
                                    check_real("momentum", momentum, none_ok=True),
                                    check_flag("affine", affine),
                                    check_flag("track_running_stats", track_running_stats),
                                    dtype_name(dtype), *check_activation(activation,
                                                                         negative_slope))
        # As given, for repr (torch prints what it was given).
        self._given = {"num_features": num_features, "eps": eps, "momentum": momentum,
                       "activation": activation, "negative_slope": negative_slope}

    @staticmethod
    def _rebuild(options: Dict[str, Any]) -> "BatchNorm1d":
        return BatchNorm1d(**options)

    def forward(self, input: ArrayLike, lengths: Any = None,
                mask: Any = None) -> Union[np.ndarray, BFloat16Tensor]:
        """Normalizes input, (N, C) or (N, C, L) of the module's dtype (or a 16-bit one, see the
        class); keeps it (no copy) for backward(). The output has the input's dtype.

        lengths (N integers in [0, L]) or mask ((N, L) bool, True = valid), for an (N, C, L)
        input: statistics over the valid positions only, 0 at the padding, and backward() uses
        the same positions. Not both (ValueError); float lengths or a mask that is not bool are
        a TypeError. In training, a batch with no valid value, or a single one, is a ValueError.
        """
        lengths, mask = valid_positions(lengths, mask)
        return self._m.forward(as_array(input, "input"), lengths, mask)

    __call__ = forward

    def infer(self, input: ArrayLike, lengths: Any = None,
              mask: Any = None) -> Union[np.ndarray, BFloat16Tensor]:
        """Normalizes input with the running statistics (batch statistics when the module does
        not track them), whatever the mode, changing nothing. lengths, mask: as forward()."""
        lengths, mask = valid_positions(lengths, mask)
        return self._m.infer(as_array(input, "input"), lengths, mask)


class GhostBatchNorm1d(_Module):
    """Ghost (virtual-batch) batch normalization, as TabNet's GBN: in training, the batch is
    split along N into virtual batches, each normalized with its own statistics and updating
    the running statistics in turn (num_batches_tracked grows by the number of chunks) — the
    result of `[bn(c) for c in x.chunk(ceil(N / virtual_batch_size))]` with one
    torch.nn.BatchNorm1d bn, computed in one call. Eval mode uses the running statistics.

    split: "chunk" (default, TabNet's): torch.chunk(x, ceil(N / virtual_batch_size)), chunks of
    ceil(N / k) samples, the last one smaller. "fixed": chunks of exactly virtual_batch_size
    samples, the remainder last; a remainder that would hold a single value per channel joins
    the chunk before it. A chunk of a single value per channel is a ValueError raised before
    anything changes. momentum defaults to 0.01 (TabNet's GBN default; its model passes 0.02).
    The other arguments (activation and negative_slope included), attributes and methods are
    BatchNorm1d's (no lengths or mask).
    """

    _NAME = "GhostBatchNorm1d"
    _OPTION_KEYS = _Module._OPTION_KEYS | {"virtual_batch_size", "split"}

    def __init__(self, num_features: int, virtual_batch_size: int = 128,
                 momentum: Optional[float] = 0.01, split: str = "chunk", eps: float = 1e-05,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: DTypeLike = "float32", activation: Optional[str] = None,
                 negative_slope: float = 0.01) -> None:
        if not isinstance(split, str):
            raise TypeError(f"split: expected \"chunk\" or \"fixed\", got {type_name(split)}")
        self._m = _bn1d.GhostBatchNorm1d(check_int("num_features", num_features),
                                         check_int("virtual_batch_size", virtual_batch_size),
                                         check_real("momentum", momentum, none_ok=True), split,
                                         check_real("eps", eps), check_flag("affine", affine),
                                         check_flag("track_running_stats", track_running_stats),
                                         dtype_name(dtype),
                                         *check_activation(activation, negative_slope))
        self._given = {"num_features": num_features, "eps": eps, "momentum": momentum,
                       "virtual_batch_size": virtual_batch_size, "split": split,
                       "activation": activation, "negative_slope": negative_slope}

    @staticmethod
    def _rebuild(options: Dict[str, Any]) -> "GhostBatchNorm1d":
        return GhostBatchNorm1d(**options)

    virtual_batch_size = _read_only("virtual_batch_size")
    split = _read_only("split")

    def forward(self, input: ArrayLike) -> Union[np.ndarray, BFloat16Tensor]:
        """Normalizes input, (N, C) or (N, C, L), virtual batch by virtual batch in training (or
        without running statistics); keeps it (no copy) for backward(), whose input gradient
        goes through each chunk's own statistics."""
        return self._m.forward(as_array(input, "input"))

    __call__ = forward

    def infer(self, input: ArrayLike) -> Union[np.ndarray, BFloat16Tensor]:
        """Normalizes input with the running statistics (each chunk's batch statistics without
        them), whatever the mode, changing nothing."""
        return self._m.infer(as_array(input, "input"))

    def chunk_bounds(self, n: int, length: int = 1) -> List[int]:
        """The virtual batches of n samples of length L (1 for (N, C) inputs) as boundaries
        [0, n_1, ..., n]: chunk i holds samples [b[i], b[i + 1])."""
        return self._m.chunk_bounds(check_int("n", n), check_int("length", length))

    def extra_repr(self) -> str:
        """The options as printed inside GhostBatchNorm1d(...)."""
        return (f"{self.num_features}, virtual_batch_size={self.virtual_batch_size}, "
                f"split={self.split!r}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}"
                f"{self._activation_repr()}")
