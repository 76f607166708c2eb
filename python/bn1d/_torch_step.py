# SPDX-License-Identifier: MIT
"""The training step of bn1d.torch's BatchNorm1d and SyncBatchNorm, on bn1d.functional's
separable steps (the compiled ones: the tensors are checked by the modules and viewed without
copies): batch statistics -> combine -> normalize (and update the running statistics);
backward: gradient sums -> combine -> input and parameter gradients. A combiner says how the
statistics and sums are combined: LocalCombiner for one batch, _torch_sync's over
torch.distributed. Nothing but tensors is saved for backward (the normalization's mean and
invstd), so saved-tensor hooks of every kind work."""

from typing import Any, NamedTuple, Optional, Tuple

import numpy as np
import torch

import bn1d.functional as F

from . import _bn1d
from ._torch_autograd import _first_order_only, _tensor, _view

_16BIT = (torch.bfloat16, torch.float16)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def shape_text(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_dtypes(module_name: str, input: torch.Tensor, module_dtype: torch.dtype) -> None:
    """ValueError unless input's dtype goes with a module of module_dtype: the same, or a 16-bit
    input for a float32/float64 module (mixed precision, as torch)."""
    if input.dtype == module_dtype or (input.dtype in _16BIT and module_dtype not in _16BIT):
        return
    also = ("" if module_dtype in _16BIT else
            "; bfloat16 and float16 inputs are also accepted (mixed precision)")
    raise ValueError(f"{module_name}: expected a {dtype_name(module_dtype)} input (the module's "
                     f"dtype), got {dtype_name(input.dtype)}{also}")


def check_savable(input: torch.Tensor, *params: Optional[torch.Tensor]) -> None:
    """torch's RuntimeError for an inference-mode input that autograd would have to save, raised
    before anything changes (autograd raises it only after the forward has run)."""
    if (torch.is_grad_enabled() and input.is_inference()
            and any(t is not None and t.requires_grad for t in (input, *params))):
        raise RuntimeError("Inference tensors cannot be saved for backward. To work around you "
                           "can make a clone to get a normal tensor and use it in autograd.")


def apply_activation(output: torch.Tensor, activation: Tuple[str, float]) -> torch.Tensor:
    """torch's own activation of output (torch's path, for inputs bn1d does not take);
    activation: ("none" | "relu" | "leaky_relu", negative_slope) as check_activation gives."""
    name, slope = activation
    if name == "relu":
        return torch.relu(output)
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(output, slope)
    return output


def activation_repr(module: torch.nn.Module) -> str:
    """", activation=..." (with the slope for leaky_relu) for a module with an activation."""
    if module.activation is None:
        return ""
    slope = (f", negative_slope={module.negative_slope}"
             if module.activation == "leaky_relu" else "")
    return f", activation={module.activation!r}{slope}"


class LocalCombiner:
    """The statistics of the local batch alone (torch.nn.BatchNorm1d)."""
    local_only = True
    module_name = "BatchNorm1d"

    def combine_stats(self, local: Optional[F.BatchStats],
                      error: Optional[BaseException]) -> F.BatchStats:
        """The batch's statistics: local, or error raised when the local part failed."""
        if error is not None:
            raise error
        return local

    def combine_grads(self, local: Optional[F.GradStats],
                      error: Optional[BaseException]) -> F.GradStats:
        """The batch's gradient sums: local, or error raised."""
        if error is not None:
            raise error
        return local


class StepOptions(NamedTuple):
    """One forward's configuration: batch statistics (or running ones), the running-average
    factor and eps, the valid positions (lengths or mask arrays, None: all), the combiner and
    the fused activation ("none", "relu" or "leaky_relu", checked by the module)."""
    batch_statistics: bool
    factor: Optional[float]
    eps: float
    lengths: Optional[np.ndarray]
    mask: Optional[np.ndarray]
    combiner: Any
    size: Optional[torch.Size] = None  # the caller's input size, for messages (None: input's)
    activation: str = "none"
    negative_slope: float = 0.01


def _check_count(stats: F.BatchStats, input: torch.Tensor, options: StepOptions) -> None:
    """torch's "Expected more than 1 value per channel when training" when the combined batch
    has one value per channel; an error for a masked batch without valid positions."""
    combiner = options.combiner
    masked = options.lengths is not None or options.mask is not None
    ranks = "" if combiner.local_only else " over all ranks"
    where = "" if combiner.local_only else " on this rank"
    size = shape_text(input.shape if options.size is None else options.size)
    if stats.count == 1:
        message = "Expected more than 1 value per channel when training, got "
        if masked:
            raise ValueError(f"{message}1 valid value per channel{ranks} (input size {size}"
                             f"{where})")
        if combiner.local_only:
            raise ValueError(f"{message}input size {size}")
        raise ValueError(f"{message}1 value per channel over all ranks (input size {size} on "
                         f"this rank)")
    if masked and stats.count == 0:
        raise ValueError(f"{combiner.module_name}: expected at least one valid position (lengths "
                         f"or mask) for batch statistics, got none{ranks} (input size {size}"
                         f"{where})")


def _optional_view(t: Optional[torch.Tensor]) -> Any:
    return None if t is None else _view(t)


def _batch_normalization(stats: F.BatchStats, eps: float) -> F.Normalization:
    """The normalization of stats. A channel whose m2 is NaN (a NaN or inf input) normalizes to
    NaN, as in torch and bn1d's modules, where bn1d.functional refuses such statistics."""
    unusable = ~(stats.m2 >= 0)
    if not unusable.any():
        return F.Normalization(*_bn1d.normalization_from_batch(stats, eps))
    usable = F.BatchStats(stats.count, stats.mean, np.where(unusable, 0.0, stats.m2))
    mean, invstd = _bn1d.normalization_from_batch(usable, eps)
    invstd[unusable] = np.nan
    return F.Normalization(mean, invstd)


def _zero_sums(channels: int, count: int = 0) -> F.GradStats:
    return F.GradStats(count, np.zeros(channels), np.zeros(channels))


class StepFunction(torch.autograd.Function):
    """One forward and backward of batch norm as an autograd function:
    apply(input, weight, bias, running_mean, running_var, options). running_mean/running_var
    are None when no running statistics are used; given with options.batch_statistics, they are
    updated in place with options.factor once the output is computed (a failing call changes
    nothing)."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, options):
        channels = input.shape[1]
        x = _view(input)
        if options.batch_statistics:
            local, error = None, None
            try:
                local = F.BatchStats(*_bn1d.batch_stats(x, options.lengths, options.mask))
            except Exception as e:  # noqa: BLE001 -- every participant must hear of it
                error = e
            stats = options.combiner.combine_stats(local, error)
            _check_count(stats, input, options)
            if stats.count == 0:  # an empty batch: an empty output, nothing updated
                norm = F.Normalization(np.zeros(channels), np.zeros(channels))
            else:
                norm = _batch_normalization(stats, options.eps)
        else:
            norm = F.Normalization(*_bn1d.normalization_from_running(
                _view(running_mean), _view(running_var), options.eps))
        output = _tensor(_bn1d.batch_norm_apply(x, norm, _optional_view(weight),
                                                _optional_view(bias), options.lengths,
                                                options.mask, options.activation,
                                                options.negative_slope))
        if options.batch_statistics and running_mean is not None and stats.count > 0:
            _bn1d.update_running_stats(_view(running_mean), _view(running_var), stats,
                                       options.factor)
        # The input, weight and bias for torch's version check and, for double backward, what
        # the gradients depend on; the normalization for backward.
        ctx.save_for_backward(input, weight, bias, torch.from_numpy(norm.mean),
                              torch.from_numpy(norm.invstd))
        ctx.options = options
        return output

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, bias, mean, invstd = ctx.saved_tensors
        options = ctx.options
        norm = F.Normalization(mean.numpy(), invstd.numpy())
        x, dy = _view(input), _view(grad_output)
        w, b = _optional_view(weight), _optional_view(bias)
        activation = (options.activation, options.negative_slope)  # dy gated by its derivative
        channels = input.shape[1]
        affine = weight is not None
        sums, error = _zero_sums(channels), None
        if options.batch_statistics or affine:
            try:
                sums = F.GradStats(*_bn1d.backward_stats(dy, x, norm, options.lengths,
                                                         options.mask, w, b, *activation))
            except Exception as e:  # noqa: BLE001 -- every participant must hear of it
                error = e
        total = options.combiner.combine_grads(sums, error)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = _tensor(_bn1d.batch_norm_backward_input(
                dy, x, norm, w, total, options.batch_statistics, options.lengths, options.mask,
                b, *activation))
        if affine and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            grad_weight, grad_bias = (_tensor(g) for g in _bn1d.batch_norm_backward_params(
                sums, norm, dtype_name(weight.dtype)))
        grads = (grad_input, grad_weight, grad_bias)
        if torch.is_grad_enabled():
            grads = _first_order_only(grads, (input, weight, bias, grad_output))
        return grads + (None,) * 3
