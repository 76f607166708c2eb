# SPDX-License-Identifier: MIT
"""bn1d.torch.GhostBatchNorm1d: ghost (virtual-batch) batch norm as a torch.nn.Module, on a
transient bn1d.GhostBatchNorm1d per forward."""

from typing import Any, Optional

import torch

import bn1d

from ._torch_autograd import _copy_into, _holder, _saved_backward, _tensor, _view
from ._torch_checks import (SUPPORTED_DTYPES, _check_features, _check_one_dtype, _real,
                            _torch_errors, _type_name)


class _GhostFunction(torch.autograd.Function):
    """bn1d.GhostBatchNorm1d's forward and backward as an autograd function.

    forward(input, weight, bias, running_mean, running_var, num_batches_tracked, training,
    options), options = (virtual_batch_size, split, momentum, eps): with training and running
    statistics, running_mean, running_var and num_batches_tracked (one count per chunk) are
    updated in place once the step has succeeded. The transient module that backward needs is
    owned by a "holder" tensor saved with save_for_backward (see _torch_autograd._holder).
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, num_batches_tracked,
                training, options):
        _check_features(input, running_mean=running_mean, running_var=running_var,
                        weight=weight, bias=bias)
        _check_one_dtype(weight=weight, bias=bias, running_mean=running_mean,
                         running_var=running_var)
        affine = weight is not None
        track = running_mean is not None
        reference = weight if affine else running_mean if track else input
        virtual_batch_size, split, momentum, eps = options
        bn = bn1d.GhostBatchNorm1d(input.shape[1], virtual_batch_size=virtual_batch_size,
                                   momentum=momentum, split=split, eps=eps, affine=affine,
                                   track_running_stats=track,
                                   dtype=str(reference.dtype).replace("torch.", ""))
        for name, value in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                            ("running_var", running_var)):
            if value is not None:
                _copy_into(bn, name, value)
        if track and num_batches_tracked is not None:
            bn.num_batches_tracked = int(num_batches_tracked)  # momentum None: 1 / count
        bn.train(bool(training))
        output = _tensor(bn.forward(_view(input)))
        if track and training:
            running_mean.copy_(_tensor(bn.running_mean))
            running_var.copy_(_tensor(bn.running_var))
            if num_batches_tracked is not None:
                num_batches_tracked.fill_(bn.num_batches_tracked)
        ctx.save_for_backward(input, weight, bias, _holder(bn))
        return output

    @staticmethod
    def backward(ctx, grad_output):
        return _saved_backward(ctx, grad_output) + (None,) * 5


class GhostBatchNorm1d(torch.nn.Module):
    """Ghost (virtual-batch) batch normalization computed by bn1d: TabNet's GBN,
    `torch.cat([bn(c) for c in x.chunk(ceil(N / virtual_batch_size))])` with one
    torch.nn.BatchNorm1d bn, in one call (see bn1d.GhostBatchNorm1d for split="chunk" and
    "fixed"). A torch.nn.Module with torch.nn.BatchNorm1d's parameters (weight, bias) and
    buffers (running_mean, running_var, num_batches_tracked) under its keys; load_state_dict
    also takes a TabNet GBN's keys (bn.weight, ...). Float32, float64, bfloat16 and float16 CPU
    inputs; gradients reach the input, weight and bias through autograd (first order)."""

    _version = 2

    @_torch_errors
    def __init__(self, num_features: int, virtual_batch_size: int = 128,
                 momentum: Optional[float] = 0.01, split: str = "chunk", eps: float = 1e-05,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        # The options are checked as bn1d.GhostBatchNorm1d checks them, with its errors.
        bn1d.GhostBatchNorm1d(num_features, virtual_batch_size, momentum, split, eps, affine,
                              track_running_stats)
        super().__init__()
        self.num_features = num_features
        self.virtual_batch_size = virtual_batch_size
        self.split = split
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = torch.nn.Parameter(torch.empty(num_features, **factory))
            self.bias = torch.nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked",
                                 torch.tensor(0, dtype=torch.long, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """running_mean 0, running_var 1, num_batches_tracked 0 (as torch.nn.BatchNorm1d)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """The running statistics reset, weight 1 and bias 0 (as torch.nn.BatchNorm1d)."""
        self.reset_running_stats()
        if self.affine:
            torch.nn.init.ones_(self.weight)
            torch.nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, virtual_batch_size={self.virtual_batch_size}, "
                f"split={self.split!r}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # TabNet's GBN holds its BatchNorm1d as .bn: its checkpoints' keys load as ours.
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if prefix + "bn." + key in state_dict and prefix + key not in state_dict:
                state_dict[prefix + key] = state_dict.pop(prefix + "bn." + key)
        # As torch.nn.BatchNorm1d: a state dict older than version 2 has no count.
        version = local_metadata.get("version", None)
        count_key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats \
                and count_key not in state_dict:
            state_dict[count_key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    load_state_dict = _torch_errors(torch.nn.Module.load_state_dict)

    @_torch_errors
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalizes input, (N, C) or (N, C, L), virtual batch by virtual batch in training
        (or without running statistics), with the running statistics in eval mode."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input: expected a torch.Tensor, got {_type_name(input)}")
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")
        if (input.layout != torch.strided or input.device.type != "cpu"
                or input.dtype not in SUPPORTED_DTYPES):
            raise ValueError(f"input: expected a dense float32, float64, bfloat16 or float16 "
                             f"CPU tensor, got a {input.dtype} {input.layout} tensor on "
                             f"{input.device}")
        options = (self.virtual_batch_size, self.split,
                   _real("momentum", self.momentum, none_ok=True), _real("eps", self.eps))
        return _GhostFunction.apply(input, self.weight, self.bias, self.running_mean,
                                    self.running_var, self.num_batches_tracked, self.training,
                                    options)
