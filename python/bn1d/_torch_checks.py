# SPDX-License-Identifier: MIT
"""The errors of bn1d.torch and the argument checks its modules share: torch's RuntimeErrors
for bad values re-raised as ValueErrors too, torch's texts for channel counts and scalars."""

import functools
import numbers

import torch

__all__ = ["Error", "NotImplementedValueError", "AssertionValueError"]

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class Error(ValueError, RuntimeError):
    """What bn1d.torch raises where torch.nn.BatchNorm1d raises a RuntimeError for a bad value
    (a channel count that is not the module's, ...): torch's message, and both a ValueError
    (bn1d's convention for bad values) and a RuntimeError (torch's type)."""


class NotImplementedValueError(ValueError, NotImplementedError):
    """A NotImplementedError from torch (an input torch cannot normalize, e.g. a sparse
    tensor) that is also a ValueError."""


class AssertionValueError(ValueError, AssertionError):
    """torch's AssertionError for a device it was not built for ("Torch not compiled with CUDA
    enabled"), also a ValueError."""


def _torch_errors(f):
    """f with torch's RuntimeErrors raised as Error (NotImplementedError as
    NotImplementedValueError, AssertionError as AssertionValueError), same message."""
    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (ValueError, TypeError):
            raise
        except AssertionError as e:
            raise AssertionValueError(*e.args) from e
        except NotImplementedError as e:
            raise NotImplementedValueError(*e.args) from e
        except RuntimeError as e:
            raise Error(*e.args) from e
    return wrapped


def _type_name(v):
    return "None" if v is None else type(v).__name__


def _real(name, value, none_ok=False):
    """value as a float where torch's batch_norm takes it (real numbers, bools, 0-d real
    tensors; None for momentum), TypeError naming the argument name where torch raises one
    (torch's wording: "batch_norm(): argument 'eps' must be float, not str")."""
    if value is None and none_ok:
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if (isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_complex()
            and value.device.type != "meta"):
        return float(value)
    raise TypeError(f"batch_norm(): argument '{name}' must be float, not {_type_name(value)}")


def _check_features(input, **tensors):
    """Error (torch's text) when one of tensors (torch's order: running_mean, running_var,
    weight, bias; None where absent) does not have one value per channel of input."""
    channels = input.shape[1]
    for name, t in tensors.items():
        if t is not None and t.numel() != channels:
            raise Error(f"{name} should contain {channels} elements not {t.numel()}")


def _check_one_dtype(**tensors):
    """Error unless the given tensors (None: absent) share one dtype, as torch requires of a
    BatchNorm's parameters and buffers."""
    present = {name: t.dtype for name, t in tensors.items() if t is not None}
    if len(set(present.values())) > 1:
        listed = ", ".join(f"{name} {dtype}" for name, dtype in present.items())
        raise Error(f"expected weight, bias, running_mean and running_var of one dtype, got "
                    f"{listed}")
