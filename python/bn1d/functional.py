# SPDX-License-Identifier: MIT
"""bn1d's functional form, as torch.nn.functional.batch_norm, with the masked variant:

    import bn1d.functional as F
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training=True)
    y = F.batch_norm(x, running_mean, running_var, training=True, lengths=lengths)

Arrays are numpy arrays or CPU torch tensors (used without a copy); the output is a new numpy
array. running_mean and running_var are updated in place in training (numpy arrays must be
writable; a torch tensor's memory is written through its numpy view).
"""

from typing import Any, Union

import numpy as np

from . import _bn1d
from ._bn1d import BFloat16Tensor
from ._checks import as_array, check_flag, check_real, valid_positions

__all__ = ["batch_norm"]


def _optional(x: Any, name: str) -> Any:
    return None if x is None else as_array(x, name)


def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-05, lengths: Any = None,
               mask: Any = None) -> Union[np.ndarray, BFloat16Tensor]:
    """torch.nn.functional.batch_norm of input, (N, C) or (N, C, L). In training, batch
    statistics normalize and, when running_mean and running_var are given, update them in
    place (unbiased variance, momentum); otherwise the running statistics normalize.

    lengths (N integers in [0, L]) or mask ((N, L) bool, True = valid), for an (N, C, L)
    input: statistics over the valid positions only, the result of torch's batch_norm on the
    packed valid values x.permute(0, 2, 1)[valid], and 0 at the padding. In training, a batch
    without valid values (or with a single one) is a ValueError, and nothing is updated."""
    lengths, mask = valid_positions(lengths, mask)
    return _bn1d.batch_norm(as_array(input, "input"), _optional(running_mean, "running_mean"),
                            _optional(running_var, "running_var"), _optional(weight, "weight"),
                            _optional(bias, "bias"), check_flag("training", training),
                            check_real("momentum", momentum), check_real("eps", eps), lengths,
                            mask)
