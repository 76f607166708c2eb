# SPDX-License-Identifier: MIT
"""bn1d's functional form: torch.nn.functional.batch_norm (with a masked variant) and the
separable steps of one training step, for code that combines statistics itself (across
processes, devices or chunks):

    import bn1d.functional as F
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training=True)

    stats = F.batch_stats(x)                          # this part's (count, mean, m2)
    stats = F.combine_stats([stats, other_stats])     # the whole batch's, merged in order
    norm = F.normalization_from_batch(stats, eps=1e-5)
    F.update_running_stats(running_mean, running_var, stats, momentum=0.1)
    y = F.batch_norm_apply(x, norm, weight, bias)
    sums = F.backward_stats(dy, x, norm)              # this part's (count, sum dy, sum dy*(x-mean))
    total = F.combine_grad_stats([sums, other_sums])
    dx = F.batch_norm_backward_input(dy, x, norm, weight, total, batch_statistics=True)
    dw, db = F.batch_norm_backward_params(sums, norm, dtype="float32")

Arrays are numpy arrays or CPU torch tensors (used without a copy), (N, C) or (N, C, L); outputs
are new numpy arrays (bn1d.BFloat16Tensor for bfloat16). Statistics are float64 arrays of shape
(C,) in the named tuples BatchStats, GradStats and Normalization, which plain tuples of the same
fields may replace. lengths or mask select the valid positions of an (N, C, L) input (masked
batch norm): statistics over them only, 0 at the padding. Bad arguments raise TypeError or
ValueError naming them; nothing is changed by a call that raises.

Fused activation: activation="relu" or "leaky_relu" (with negative_slope) in batch_norm and
batch_norm_apply returns act(bn(x)) computed in the same pass; the backward steps then take the
same activation with the forward's weight and bias, and gate dy by the activation's derivative
(torch's: 0 where bn(x) == 0 for ReLU), recomputing bn(x) from the input:

    y = F.batch_norm_apply(x, norm, weight, bias, activation="relu")
    sums = F.backward_stats(dy, x, norm, weight=weight, bias=bias, activation="relu")
    dx = F.batch_norm_backward_input(dy, x, norm, weight, total, batch_statistics=True,
                                     bias=bias, activation="relu")
"""

from typing import Any, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _bn1d
from ._bn1d import BFloat16Tensor
from ._checks import (as_array, check_activation, check_flag, check_int, check_real,
                      dtype_name, type_name)
from ._checks import valid_positions

__all__ = ["batch_norm", "BatchStats", "GradStats", "Normalization", "batch_stats",
           "combine_stats", "normalization_from_batch", "normalization_from_running",
           "update_running_stats", "batch_norm_apply", "backward_stats", "combine_grad_stats",
           "batch_norm_backward_input", "batch_norm_backward_params"]

Array = Union[np.ndarray, BFloat16Tensor]


class BatchStats(NamedTuple):
    """Per-channel statistics of a batch: count (values per channel), mean and m2 (the sum of
    squared deviations from mean), float64 arrays of shape (C,)."""
    count: int
    mean: np.ndarray
    m2: np.ndarray


class GradStats(NamedTuple):
    """Per-channel sums of a backward pass: count, sum_dy (sum of dy) and sum_dy_xmu (sum of
    dy * (x - mean)), float64 arrays of shape (C,)."""
    count: int
    sum_dy: np.ndarray
    sum_dy_xmu: np.ndarray


class Normalization(NamedTuple):
    """What normalizes each channel: mean and invstd = 1 / sqrt(var + eps), float64 (C,)."""
    mean: np.ndarray
    invstd: np.ndarray


def _optional(x: Any, name: str) -> Any:
    return None if x is None else as_array(x, name)


def _fields(value: Any, name: str, kind: Any) -> tuple:
    """value (a kind named tuple or a plain tuple/list of its fields) with its count checked and
    its arrays as numpy views."""
    if not isinstance(value, (tuple, list)) or len(value) != len(kind._fields):
        raise TypeError(f"{name}: expected a bn1d.functional.{kind.__name__} "
                        f"({', '.join(kind._fields)}), got {type_name(value)}")
    fields = list(value)
    first_array = 1 if kind._fields[0] == "count" else 0
    if first_array:
        fields[0] = check_int(f"{name}.count", fields[0])
    for i in range(first_array, len(fields)):
        fields[i] = as_array(fields[i], f"{name}.{kind._fields[i]}")
    return tuple(fields)


def _parts(parts: Any, kind: Any) -> list:
    if not isinstance(parts, (tuple, list)):
        raise TypeError(f"parts: expected a list of bn1d.functional.{kind.__name__}, got "
                        f"{type_name(parts)}")
    return [_fields(p, f"parts[{i}]", kind) for i, p in enumerate(parts)]


def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-05, lengths: Any = None, mask: Any = None,
               activation: Optional[str] = None, negative_slope: float = 0.01) -> Array:
    """torch.nn.functional.batch_norm of input, (N, C) or (N, C, L). In training, batch
    statistics normalize and, when running_mean and running_var are given, update them in
    place (unbiased variance, momentum); otherwise the running statistics normalize.

    lengths (N integers in [0, L]) or mask ((N, L) bool, True = valid), for an (N, C, L)
    input: statistics over the valid positions only, the result of torch's batch_norm on the
    packed valid values x.permute(0, 2, 1)[valid], and 0 at the padding. In training, a batch
    without valid values (or with a single one) is a ValueError, and nothing is updated.

    activation (None, "relu" or "leaky_relu" with negative_slope): the result is
    act(batch_norm(...)), computed in the same pass."""
    lengths, mask = valid_positions(lengths, mask)
    return _bn1d.batch_norm(as_array(input, "input"), _optional(running_mean, "running_mean"),
                            _optional(running_var, "running_var"), _optional(weight, "weight"),
                            _optional(bias, "bias"), check_flag("training", training),
                            check_real("momentum", momentum), check_real("eps", eps), lengths,
                            mask, *check_activation(activation, negative_slope))


def batch_stats(input: Any, lengths: Any = None, mask: Any = None) -> BatchStats:
    """Step 1 of the forward pass: the count, mean and m2 of each channel of input (over the
    valid positions with lengths or mask). An empty batch gives count 0, mean 0 and m2 0."""
    lengths, mask = valid_positions(lengths, mask)
    return BatchStats(*_bn1d.batch_stats(as_array(input, "input"), lengths, mask))


def combine_stats(parts: Sequence[BatchStats]) -> BatchStats:
    """Step 2: the statistics of the union of disjoint batches, merged in the order given with
    Chan's formula (the same bits for the same parts in the same order). Parts with count 0
    contribute nothing."""
    return BatchStats(*_bn1d.combine_stats(_parts(parts, BatchStats)))


def normalization_from_batch(stats: BatchStats, eps: float = 1e-05) -> Normalization:
    """The normalization of a batch: its mean and invstd = 1 / sqrt(m2 / count + eps) (biased
    variance). ValueError for count 0."""
    return Normalization(*_bn1d.normalization_from_batch(
        _fields(stats, "stats", BatchStats), check_real("eps", eps)))


def normalization_from_running(running_mean: Any, running_var: Any,
                               eps: float = 1e-05) -> Normalization:
    """The normalization of evaluation mode: running_mean and 1 / sqrt(running_var + eps)."""
    return Normalization(*_bn1d.normalization_from_running(
        as_array(running_mean, "running_mean"), as_array(running_var, "running_var"),
        check_real("eps", eps)))


def update_running_stats(running_mean: Any, running_var: Any, stats: BatchStats,
                         momentum: float = 0.1) -> None:
    """Updates running_mean and running_var in place: running = (1 - momentum) * running +
    momentum * observed, with the unbiased variance m2 / (count - 1). Requires count > 1."""
    _bn1d.update_running_stats(as_array(running_mean, "running_mean"),
                               as_array(running_var, "running_var"),
                               _fields(stats, "stats", BatchStats),
                               check_real("momentum", momentum))


def batch_norm_apply(input: Any, norm: Normalization, weight: Any = None, bias: Any = None,
                     lengths: Any = None, mask: Any = None, activation: Optional[str] = None,
                     negative_slope: float = 0.01) -> Array:
    """Step 3: (x - mean) * invstd * weight + bias per channel (weight 1 and bias 0 when None),
    a new array of input's shape and dtype; 0 at the padding with lengths or mask. With
    activation ("relu" or "leaky_relu" with negative_slope), act of that, in the same pass."""
    lengths, mask = valid_positions(lengths, mask)
    return _bn1d.batch_norm_apply(as_array(input, "input"), _fields(norm, "norm", Normalization),
                                  _optional(weight, "weight"), _optional(bias, "bias"),
                                  lengths, mask, *check_activation(activation, negative_slope))


def backward_stats(grad_output: Any, input: Any, norm: Normalization, lengths: Any = None,
                   mask: Any = None, *, weight: Any = None, bias: Any = None,
                   activation: Optional[str] = None, negative_slope: float = 0.01) -> GradStats:
    """Step 1 of the backward pass: count, sum of dy and sum of dy * (x - norm.mean) per
    channel (over the valid positions with lengths or mask). grad_output has input's shape and
    dtype. With activation (the forward's, with its weight and bias), dy is first gated by the
    activation's derivative at z = (x - mean) * invstd * weight + bias: dy where z > 0, else 0
    (relu) or negative_slope * dy (leaky_relu); without, weight and bias are not used."""
    lengths, mask = valid_positions(lengths, mask)
    return GradStats(*_bn1d.backward_stats(as_array(grad_output, "grad_output"),
                                           as_array(input, "input"),
                                           _fields(norm, "norm", Normalization), lengths, mask,
                                           _optional(weight, "weight"), _optional(bias, "bias"),
                                           *check_activation(activation, negative_slope)))


def combine_grad_stats(parts: Sequence[GradStats]) -> GradStats:
    """Step 2: the sums of disjoint batches' gradient statistics, added in the order given."""
    return GradStats(*_bn1d.combine_grad_stats(_parts(parts, GradStats)))


def batch_norm_backward_input(grad_output: Any, input: Any, norm: Normalization, weight: Any,
                              stats: GradStats, batch_statistics: bool, lengths: Any = None,
                              mask: Any = None, *, bias: Any = None,
                              activation: Optional[str] = None,
                              negative_slope: float = 0.01) -> Array:
    """Step 3: the input gradient. With batch_statistics (the forward normalized with the
    statistics of the batch that stats sums over, e.g. the combined global batch):
    dx = weight * invstd * (dy - sum_dy / n - (x - mean) * invstd**2 * sum_dy_xmu / n), n =
    stats.count; without (running statistics): dx = weight * invstd * dy. weight None is 1.
    0 at the padding with lengths or mask. With activation (the forward's, with its bias), dy
    is gated as in backward_stats, whose gated sums stats must then hold."""
    lengths, mask = valid_positions(lengths, mask)
    return _bn1d.batch_norm_backward_input(
        as_array(grad_output, "grad_output"), as_array(input, "input"),
        _fields(norm, "norm", Normalization), _optional(weight, "weight"),
        _fields(stats, "stats", GradStats), check_flag("batch_statistics", batch_statistics),
        lengths, mask, _optional(bias, "bias"), *check_activation(activation, negative_slope))


def batch_norm_backward_params(stats: GradStats, norm: Normalization,
                               dtype: Any = "float32") -> Tuple[Array, Array]:
    """(grad_weight, grad_bias) = (sum_dy_xmu * invstd, sum_dy) from this part's gradient sums,
    in dtype ("float32", "float64", "bfloat16", "float16" or a numpy/torch dtype)."""
    return _bn1d.batch_norm_backward_params(_fields(stats, "stats", GradStats),
                                            _fields(norm, "norm", Normalization),
                                            dtype_name(dtype))
