# SPDX-License-Identifier: MIT
"""bn1d: exact, fast BatchNorm1d — a drop-in for torch.nn.BatchNorm1d on numpy arrays.

    import numpy as np, bn1d
    m = bn1d.BatchNorm1d(100)
    y = m(np.random.randn(20, 100).astype(np.float32))
    grad_input, grad_weight, grad_bias = m.backward(np.ones_like(y))

Inputs are numpy arrays (float32 or float64, the module's dtype, any strides: used without a
copy) or objects with ``__dlpack__`` such as CPU torch tensors (also without a copy). Outputs are
numpy arrays. ``weight``, ``bias``, ``running_mean`` and ``running_var`` are writable numpy views
of the module's own storage. Errors are ``ValueError`` with the C++ library's message; a file
that cannot be opened, read or written (``save``, ``load``) is an ``OSError``.
"""

import os
from collections import OrderedDict

import numpy as np

from . import _bn1d

__all__ = ["BatchNorm1d"]


def _as_array(x):
    """A numpy view of @p x without copying where possible."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__"):
        if getattr(x, "requires_grad", False):
            x = x.detach()
        return np.from_dlpack(x)
    return np.asarray(x)


def _state_value(v):
    """A state-dict value as a numpy array (torch tensors through .detach().cpu())."""
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        return np.asarray(v.detach().cpu())
    return np.asarray(v)


def _dtype_name(dtype):
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
    try:
        return np.dtype(name).name
    except TypeError:
        return name


class BatchNorm1d:
    """Batch normalization over (N, C) or (N, C, L) inputs, as torch.nn.BatchNorm1d.

    Args mirror torch's; ``dtype`` ("float32" or "float64", or a numpy/torch dtype) is the dtype
    of the parameters and buffers and of the inputs the module accepts.
    """

    def __init__(self, num_features, eps=1e-05, momentum=0.1, affine=True,
                 track_running_stats=True, dtype="float32"):
        self._m = _bn1d.BatchNorm1d(num_features, eps, momentum, bool(affine),
                                    bool(track_running_stats), _dtype_name(dtype))
        # As given, for repr (torch prints what it was given).
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)

    # ---- mode ----------------------------------------------------------------------------
    @property
    def training(self):
        return self._m.training

    @training.setter
    def training(self, mode):
        self._m.training = bool(mode)

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

    # ---- compute -------------------------------------------------------------------------
    def forward(self, input):
        """Normalizes @p input; keeps it (no copy) for backward()."""
        return self._m.forward(_as_array(input))

    __call__ = forward

    def infer(self, input):
        """Normalizes @p input with the running statistics (batch statistics when the module
        does not track them), whatever the mode, changing nothing."""
        return self._m.infer(_as_array(input))

    def backward(self, grad_output):
        """(grad_input, grad_weight, grad_bias) of the last forward(); None where torch has
        None (no weight and bias without affine)."""
        return self._m.backward(_as_array(grad_output))

    # ---- parameters and buffers: writable views of the module's storage -------------------
    def _set(self, name, value):
        view = getattr(self._m, name)
        if view is None:
            raise ValueError(f"{name}: the module has no {name}")
        value = _state_value(value)
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

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self):
        """weight, bias, running_mean, running_var, num_batches_tracked (copies; the count as a
        0-d int64 array), in torch's order, those that exist."""
        return OrderedDict(self._m.state_dict().items())

    def load_state_dict(self, state_dict, strict=True):
        """Copies the entries of @p state_dict (numpy arrays or torch tensors) into the module.
        Wrong shapes or dtypes are errors (no silent conversion); on error nothing changes."""
        items = [(str(k), _state_value(v)) for k, v in state_dict.items()]
        self._m.load_state_dict(items, bool(strict))

    def save(self, path):
        """Saves state_dict() as a safetensors file (OSError when it cannot be written)."""
        self._m.save(os.fspath(path))

    def load(self, path, prefix=""):
        """Loads the entries ``prefix + key`` of a safetensors file, strictly (OSError when it
        cannot be read, ValueError when it is malformed or does not fit the module)."""
        self._m.load(os.fspath(path), prefix)

    def reset_parameters(self):
        self._m.reset_parameters()

    def reset_running_stats(self):
        self._m.reset_running_stats()

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def __repr__(self):
        return f"BatchNorm1d({self.extra_repr()})"
