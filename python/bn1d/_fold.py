# SPDX-License-Identifier: MIT
"""Folding an eval-mode bn1d.BatchNorm1d into the Linear or Conv1d next to it, for inference.

With sigma = sqrt(running_var + eps), gamma the weight (1 without affine) and beta the bias (0
without affine), the eval-mode module is x -> gamma * (x - running_mean) / sigma + beta per
channel, which the neighbouring layer absorbs (docs/math.md, "Folding into a Linear"). Everything
is computed in float64 and each result element rounded once to the weight's dtype.
"""

from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

import numpy as np

from . import _bn1d
from ._bn1d import BFloat16Tensor
from ._checks import as_array

if TYPE_CHECKING:
    import torch

    from . import BatchNorm1d

ArrayLike = Union[np.ndarray, "torch.Tensor"]
Array = Union[np.ndarray, BFloat16Tensor]


def _compiled_module(bn: Any) -> Any:
    """The compiled module of the bn1d.BatchNorm1d bn; TypeError for anything else."""
    from . import BatchNorm1d
    if not isinstance(bn, BatchNorm1d):
        kind = type(bn)
        raise TypeError("bn: expected a bn1d.BatchNorm1d, got "
                        f"{kind.__module__}.{kind.__qualname__}")
    return bn._m


def _layer_args(weight: Any, bias: Any) -> Tuple[Any, Any]:
    return as_array(weight, "weight"), None if bias is None else as_array(bias, "bias")


def fold_into_preceding(bn: "BatchNorm1d", weight: ArrayLike,
                        bias: Optional[ArrayLike] = None) -> Tuple[Array, Array]:
    """(weight, bias) of the layer before bn with bn folded in: bn(W x + b) = W' x + b'.

    bn: an eval-mode bn1d.BatchNorm1d with running statistics. weight: the weight of a Linear
    (C, in) or Conv1d (C, in, k), C = bn.num_features, as a numpy array or a CPU torch tensor;
    bias: (C,) or None (a layer without bias). W' = diag(gamma / sigma) W (every [c, :, :] of a
    Conv1d weight scaled), b' = gamma (b - running_mean) / sigma + beta. Returns new arrays of
    the weight's dtype (BFloat16Tensor for bfloat16); b' always exists. ValueError for bn in
    training mode or without running statistics, shapes that do not fit C, a bias dtype other
    than the weight's, and running_var + eps negative or NaN; TypeError for a bn that is not a
    bn1d.BatchNorm1d.
    """
    module = _compiled_module(bn)
    return _bn1d.fold_into_preceding(module, *_layer_args(weight, bias))


def fold_into_following(bn: "BatchNorm1d", weight: ArrayLike,
                        bias: Optional[ArrayLike] = None) -> Tuple[Array, Array]:
    """(weight, bias) of the Linear after bn with bn folded in: W bn(x) + b = W' x + b'.

    bn: an eval-mode bn1d.BatchNorm1d with running statistics over the Linear's C input
    features. weight: (out, C), as a numpy array or a CPU torch tensor; bias: (out,) or None.
    W' = W diag(gamma / sigma), b' = b + W (beta - gamma running_mean / sigma), a float64 dot
    product per output. A Conv1d after bn cannot be folded (its zero padding is not normalized):
    a 3-D weight is a ValueError. Errors otherwise as fold_into_preceding.
    """
    module = _compiled_module(bn)
    return _bn1d.fold_into_following(module, *_layer_args(weight, bias))
