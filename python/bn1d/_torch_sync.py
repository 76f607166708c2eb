# SPDX-License-Identifier: MIT
"""bn1d.torch.SyncBatchNorm: batch norm over the global batch of a torch.distributed process
group, on CPU tensors (torch.nn.SyncBatchNorm refuses them), on bn1d's training step.

Each training step makes one all_gather in forward (every rank's count, mean and M2 per channel,
float64, merged in rank order with Chan's formula: the same statistics, bit for bit, on every
rank) and one in backward (every rank's sum dy and sum dy * (x - mean)). A status travels with the
values, so that an invalid input on one rank raises on every rank instead of leaving the others
waiting in a collective."""

import math
from typing import Any, Optional

import numpy as np
import torch

import bn1d.functional as F

from . import _bn1d
from ._checks import check_activation, valid_positions
from ._torch_checks import (SUPPORTED_DTYPES, Error, _check_features, _check_one_dtype, _real,
                            _torch_errors, _type_name)
from ._torch_convert import check_model, replace, swap
from ._torch_step import (LocalCombiner, StepFunction, StepOptions, activation_repr,
                          apply_activation, check_dtypes, check_savable, dtype_name)

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]

_LOCAL = LocalCombiner()
# The failures a rank reports to the others: the code in the gathered values, and the reason.
_FAILURES = {1: "an invalid input", 2: "input with the wrong channel count",
             3: "input of the wrong dtype", 4: "an invalid module state", 7: "an internal error"}
_COUNT_LIMIT = 2 ** 53  # counts travel as float64: exact below this
_HEADER = 5  # status, input dim, eps, running-average factor, count


def _failure_code(error: BaseException) -> int:
    """The code of error for the other ranks: its own, 1 for other bad values, 7 otherwise."""
    return getattr(error, "_bn1d_failure", 1 if isinstance(error, (ValueError, TypeError)) else 7)


def _failed(code: int, message: str, kind: type = ValueError) -> Exception:
    """An exception of kind (Error for a channel count: torch's RuntimeError) carrying the
    failure code sent to the other ranks."""
    error = Error(message) if code == 2 else kind(message)
    error._bn1d_failure = code
    return error


class DistributedCombiner:
    """Combines a step's statistics and gradient sums over a process group with one all_gather
    each: per rank, float64, a header (status, input dim, eps, running-average factor, count)
    and two C-vectors."""
    local_only = False
    module_name = "SyncBatchNorm"

    def __init__(self, group: Any, world_size: int, channels: int, eps: float, factor: float,
                 input_dim: int) -> None:
        self.group = group
        self.world_size = world_size
        self.channels = channels
        self.options = (eps, factor)
        self.input_dim = input_dim  # the caller's input, before any (N, C, L) view

    def _gather(self, code: int, dim: int, count: int, first: Any, second: Any) -> list:
        """Every rank's header and vectors (first, second: zeros on a failed rank), in rank
        order."""
        C = self.channels
        packed = torch.zeros(_HEADER + 2 * C, dtype=torch.float64)
        packed[:_HEADER] = torch.tensor([code, dim, *self.options, count], dtype=torch.float64)
        if code == 0:
            packed[_HEADER:_HEADER + C] = torch.from_numpy(np.asarray(first))
            packed[_HEADER + C:] = torch.from_numpy(np.asarray(second))
        gathered = [torch.empty_like(packed) for _ in range(self.world_size)]
        torch.distributed.all_gather(gathered, packed, group=self.group)
        return gathered

    def _check(self, gathered: list, error: Optional[BaseException], check_dims: bool) -> None:
        if error is not None:
            raise error
        for rank, values in enumerate(gathered):
            code = int(values[0])
            if code != 0:
                raise ValueError(f"SyncBatchNorm: rank {rank} failed with "
                                 f"{_FAILURES.get(code, 'an error')}; see its error")
        dims = [int(values[1]) for values in gathered]
        if check_dims and len(set(dims)) > 1:
            listed = ", ".join(f"rank {r}: {d}-D" for r, d in enumerate(dims))
            raise ValueError(f"SyncBatchNorm: the ranks' inputs have different numbers of "
                             f"dimensions ({listed})")
        for i, name in ((2, "eps"), (3, "running-average factor (momentum)")):
            values = [float(v[i]) for v in gathered]
            if any(v != values[0] for v in values):  # NaN never agrees (eps, momentum: finite)
                listed = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
                raise ValueError(f"SyncBatchNorm: the ranks disagree on the {name} ({listed})")

    def _parts(self, gathered: list) -> list:
        C = self.channels
        return [(int(v[_HEADER - 1]), v[_HEADER:_HEADER + C].numpy(), v[_HEADER + C:].numpy())
                for v in gathered]

    def combine_stats(self, local: Optional[F.BatchStats],
                      error: Optional[BaseException]) -> F.BatchStats:
        """The global batch's statistics, merged in rank order."""
        if error is None and local.count >= _COUNT_LIMIT:
            error = _failed(1, f"SyncBatchNorm: expected fewer than 2**53 values per channel, "
                               f"got {local.count}")
        code = 0 if error is None else _failure_code(error)
        gathered = (self._gather(code, self.input_dim, 0, None, None) if code else
                    self._gather(0, self.input_dim, local.count, local.mean, local.m2))
        self._check(gathered, error, check_dims=True)
        return F.BatchStats(*_bn1d.combine_stats(self._parts(gathered)))

    def combine_grads(self, local: F.GradStats, error: Optional[BaseException]) -> F.GradStats:
        """The global batch's gradient sums, added in rank order."""
        code = 0 if error is None else _failure_code(error)
        gathered = (self._gather(code, 0, 0, None, None) if code else
                    self._gather(0, 0, local.count, local.sum_dy, local.sum_dy_xmu))
        self._check(gathered, error, check_dims=False)
        return F.GradStats(*_bn1d.combine_grad_stats(self._parts(gathered)))


def _process_group(module: "SyncBatchNorm") -> tuple:
    """(group, world size) of module: world size 1 without an initialized torch.distributed."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None, 1
    group = module.process_group if module.process_group is not None else dist.group.WORLD
    return group, dist.get_world_size(group)


class SyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """torch.nn.SyncBatchNorm for CPU tensors, computed by bn1d: batch norm over the global
    batch of a torch.distributed process group (gloo, or any backend with all_gather).

    Same constructor, parameters, buffers and state dict as torch.nn.SyncBatchNorm, but not a
    subclass of it (DistributedDataParallel refuses those on CPU). Inputs (N, C, *) of dtype
    float32, float64, bfloat16 or float16 on the CPU; tensors on other devices run
    torch.nn.SyncBatchNorm.forward.

    In training, when torch.distributed is initialized and the group has more than one process,
    the statistics are those of the concatenation of every rank's input (uneven sizes and empty
    ranks included), identical on every rank, as are the running statistics. The input gradient
    is that of the global batch; weight and bias gradients are this rank's share (summed over the
    ranks they give the global batch's; DistributedDataParallel averages them, as for any
    parameter). An invalid input or a global batch of one value per channel raises a ValueError
    on every rank and changes nothing. In eval mode (running statistics), without
    torch.distributed or with one process, it is BatchNorm and makes no collective.
    forward(input, lengths=None, mask=None) also normalizes padded (N, C, L) batches over their
    valid positions (see bn1d.torch.BatchNorm1d.forward). activation (None, "relu" or
    "leaky_relu") with negative_slope is fused into the output, as in bn1d.torch.BatchNorm1d.
    """

    activation: Optional[str] = None  # instance attributes; these defaults serve old pickles
    negative_slope: float = 0.01

    @_torch_errors
    def __init__(self, num_features: int, eps: float = 1e-05, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Any = None, device: Any = None, dtype: Any = None, *,
                 activation: Optional[str] = None, negative_slope: float = 0.01) -> None:
        check_activation(activation, negative_slope)
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.process_group = process_group
        self.activation = activation
        self.negative_slope = negative_slope

    def extra_repr(self) -> str:
        """torch's, then the activation when one is fused."""
        return super().extra_repr() + activation_repr(self)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    # torch.nn.SyncBatchNorm.forward, which runs non-CPU inputs, calls it.
    _check_non_zero_input_channels = torch.nn.SyncBatchNorm._check_non_zero_input_channels

    def _checked_view(self, input: Any, running_mean: Any, running_var: Any) -> torch.Tensor:
        """input viewed as (N, C) or (N, C, L) (a copy only where its memory does not allow a
        view); the errors carry the code the other ranks hear."""
        if not isinstance(input, torch.Tensor):
            raise _failed(1, f"input: expected a torch.Tensor, got {_type_name(input)}",
                          TypeError)
        if input.layout != torch.strided:
            raise _failed(1, f"input: expected a dense (strided) tensor, got layout "
                             f"{input.layout}")
        if input.dim() < 2:
            raise _failed(1, f"expected at least 2D input (got {input.dim()}D input)")
        if input.size(1) == 0:
            raise _failed(2, "SyncBatchNorm number of input channels should be non-zero")
        if input.size(1) != self.num_features:  # the collectives carry num_features values
            raise _failed(2, f"SyncBatchNorm: expected input with {self.num_features} channels "
                             f"(num_features), got {input.size(1)}")
        if input.dtype not in SUPPORTED_DTYPES:
            raise _failed(3, f"input: expected a float32, float64, bfloat16 or float16 tensor, "
                             f"got {dtype_name(input.dtype)}")
        try:
            _check_features(input, running_mean=running_mean, running_var=running_var,
                            weight=self.weight, bias=self.bias)
        except Error as e:
            raise _failed(2, str(e)) from None
        try:
            _check_one_dtype(weight=self.weight, bias=self.bias, running_mean=self.running_mean,
                             running_var=self.running_var)
        except Error as e:
            raise _failed(4, str(e)) from None
        reference = next((t for t in (self.weight, self.running_mean) if t is not None), input)
        try:
            check_dtypes("SyncBatchNorm", input, reference.dtype)
        except ValueError as e:
            raise _failed(3, str(e)) from None
        if input.dim() <= 3:
            return input
        return input.reshape(input.shape[0], input.shape[1], math.prod(input.shape[2:]))

    def _counts_batch(self) -> bool:
        """Whether this forward counts a batch: training with tracked statistics, as torch."""
        return (self.training and self.track_running_stats
                and self.num_batches_tracked is not None)

    def _factor(self) -> float:
        """The running-average factor of this forward: momentum, or 1 / (the count after this
        batch) for a cumulative average (momentum None), as torch."""
        if self.momentum is not None:
            return _real("momentum", self.momentum)
        return 1.0 / float(int(self.num_batches_tracked) + 1) if self._counts_batch() else 0.0

    @_torch_errors
    def forward(self, input: torch.Tensor, lengths: Any = None,
                mask: Any = None) -> torch.Tensor:
        """Normalizes input, (N, C, *), over the global batch in training (see the class
        docstring). Call the module, m(input), so that hooks run.

        lengths or mask, for an (N, C, L) CPU input: the valid positions, as for
        bn1d.torch.BatchNorm1d (statistics over the valid values of every rank, 0 at the
        padding)."""
        if isinstance(input, torch.Tensor) and input.device.type != "cpu":
            if lengths is not None or mask is not None:
                raise ValueError(f"lengths, mask: bn1d's masked batch norm takes CPU tensors, "
                                 f"got an input on {input.device}")
            activation = check_activation(self.activation, self.negative_slope)
            return apply_activation(torch.nn.SyncBatchNorm.forward(self, input), activation)
        group, world_size = _process_group(self)
        sync = self.training and world_size > 1
        use_buffers = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_buffers else None
        running_var = self.running_var if use_buffers else None
        eps = factor = math.nan  # until read: any failure below must reach the other ranks
        try:
            eps, factor = _real("eps", self.eps), self._factor()
            activation = check_activation(self.activation, self.negative_slope)
            view = self._checked_view(input, running_mean, running_var)
            check_savable(input, self.weight, self.bias)
            lengths, mask = valid_positions(lengths, mask)
            if (lengths is not None or mask is not None) and input.dim() != 3:
                raise _failed(1, f"lengths, mask: expected an (N, C, L) input, got "
                                 f"{input.dim()}D input")
        except Exception as e:  # noqa: BLE001 -- every rank must hear of it
            if sync:  # the other ranks hear of it in the collective, then every rank raises
                self._combiner(group, world_size, eps, factor, input).combine_stats(None, e)
            raise
        combiner = self._combiner(group, world_size, eps, factor, input) if sync else _LOCAL
        counted = self._counts_batch()
        if counted:
            self.num_batches_tracked.add_(1)
        batch_statistics = self.training or (self.running_mean is None
                                             and self.running_var is None)
        try:
            options = StepOptions(batch_statistics, factor, eps, lengths, mask, combiner,
                                  input.shape, *activation)
            output = StepFunction.apply(view, self.weight, self.bias, running_mean, running_var,
                                        options)
        except BaseException:
            if counted:  # a failed forward changes nothing: the count is restored
                self.num_batches_tracked.sub_(1)
            raise
        return output if view is input else output.reshape(input.shape)

    def _combiner(self, group: Any, world_size: int, eps: float, factor: float,
                  input: Any) -> DistributedCombiner:
        input_dim = input.dim() if isinstance(input, torch.Tensor) else 0
        return DistributedCombiner(group, world_size, self.num_features, eps, factor, input_dim)

    @classmethod
    def convert_sync_batchnorm(cls, module: torch.nn.Module,
                               process_group: Any = None) -> torch.nn.Module:
        """bn1d.torch.convert_sync_batchnorm(module, process_group)."""
        return convert_sync_batchnorm(module, process_group)


def convert_sync_batchnorm(module: torch.nn.Module, process_group: Any = None) -> torch.nn.Module:
    """Replaces, in place and recursively, every batch norm of module
    (torch.nn.modules.batchnorm._BatchNorm: BatchNorm1d/2d/3d, torch.nn.SyncBatchNorm,
    bn1d.torch.BatchNorm1d) by a bn1d.torch.SyncBatchNorm over process_group (None: the whole
    world) with the same options and training flag, sharing its parameter and buffer objects
    (an optimizer built before keeps updating them); returns module, or the new module when
    module itself is a batch norm. As torch.nn.SyncBatchNorm.convert_sync_batchnorm, but the
    training flag is kept (torch's classmethod leaves the new modules in training mode). A
    fused bn1d.torch.BatchNorm1d keeps its activation."""
    check_model(module)

    def converted(m: torch.nn.Module) -> SyncBatchNorm:
        new = swap(m, SyncBatchNorm, process_group=process_group,
                   activation=getattr(m, "activation", None),
                   negative_slope=getattr(m, "negative_slope", 0.01))
        if hasattr(m, "qconfig"):
            new.qconfig = m.qconfig
        return new

    return replace(module, lambda m: isinstance(m, torch.nn.modules.batchnorm._BatchNorm),
                   converted)
