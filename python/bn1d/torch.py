# SPDX-License-Identifier: MIT
"""bn1d's kernels behind a torch.nn.Module: a drop-in for torch.nn.BatchNorm1d.

    import bn1d.torch
    bn = bn1d.torch.BatchNorm1d(32)          # same constructor as torch.nn.BatchNorm1d
    model = bn1d.torch.convert(model)        # every torch.nn.BatchNorm1d -> bn1d.torch.BatchNorm1d
    model = bn1d.torch.convert(model, fuse_activations=True)  # and BN + ReLU -> one fused module
    model = bn1d.torch.revert(model)         # and back
    model = bn1d.torch.convert_sync_batchnorm(model)  # every batch norm -> SyncBatchNorm (CPU)
    t = bn1d.torch.to_torch(m)               # a bn1d.BatchNorm1d (numpy) -> a torch module
    m = bn1d.torch.from_torch(t)             # and back
    folded, report = bn1d.torch.fold(model, x)  # batch norms folded into Linear/Conv1d

Only "import bn1d.torch" imports torch; "import bn1d" does not.

The module
----------
bn1d.torch.BatchNorm1d is a subclass of torch.nn.BatchNorm1d that overrides only forward().
Its parameters (weight, bias: nn.Parameter), buffers (running_mean, running_var,
num_batches_tracked; None where torch has None), constructor, state_dict/load_state_dict,
train()/eval(), .double(), repr and isinstance(m, torch.nn.BatchNorm1d) are torch's own.
forward() follows torch.nn.BatchNorm1d.forward step by step (input-dim check,
num_batches_tracked += 1 in training with tracked statistics, the exponential-average factor:
momentum, or 1 / num_batches_tracked when momentum is None; batch statistics in training or
when there are no running statistics) and then runs bn1d's forward and backward kernels through
a torch.autograd.Function, so gradients reach the input and weight/bias as usual.

Fused activation: BatchNorm1d(C, activation="relu") (or "leaky_relu", negative_slope=0.01)
returns relu(bn(x)) (leaky_relu(bn(x), negative_slope)) computed in the normalizing pass, and
its backward gates grad_output by the activation's derivative in bn1d's backward passes: the
outputs and gradients of torch's relu(batch_norm(x)), the subgradient 0 at bn(x) == 0
included. activation and negative_slope are attributes (shown by repr), not state: the state
dict is torch.nn.BatchNorm1d's. SyncBatchNorm takes them too.

Padded batches: forward(x, lengths=None, mask=None) takes the valid positions of an (N, C, L)
batch (lengths: N integers, sample n valid at [0, lengths[n]); mask: (N, L) bool, True = valid;
tensors on any device or arrays). Statistics, running statistics and gradients at the valid
positions are those of torch.nn.BatchNorm1d on the packed values x.permute(0, 2, 1)[valid];
the output and the input gradient are 0 at the padding. CPU inputs only (a ValueError
otherwise: torch has no masked batch norm to fall back on).

bn1d.torch.SyncBatchNorm(num_features, ..., process_group=None): torch.nn.SyncBatchNorm for CPU
tensors over torch.distributed (gloo), usable under DistributedDataParallel on CPU;
convert_sync_batchnorm(model) puts it in place of a model's batch norms (see its docstring).

bn1d.torch.GhostBatchNorm1d(num_features, virtual_batch_size=128, momentum=0.01,
split="chunk", ...): ghost batch norm (TabNet's GBN) in one call, a torch.nn.Module with
torch.nn.BatchNorm1d's parameters, buffers and state-dict keys (see its docstring).

Autograd
--------
* First order only, like a function marked once_differentiable. backward() may run several
  times through a graph kept with retain_graph=True (y.backward(g, retain_graph=True) then
  y.backward(g) accumulates the same gradients twice; torch.autograd.grad likewise), and
  torch.autograd.gradcheck passes in float64. Without retain_graph a second backward is torch's
  RuntimeError ("Trying to backward through the graph a second time").
* A second derivative is a NotImplementedError (a RuntimeError) when it is taken, never a wrong
  value: with create_graph=True the gradients are connected to the input, weight, bias and
  grad_output, and differentiating them again raises.
* What backward needs is saved as tensors only: the input, weight and bias (as torch saves
  them) and the normalization's per-channel mean and invstd (float64). Saved-tensor hooks
  (torch.autograd.graph.saved_tensors_hooks, save_on_cpu, checkpointing) work with them,
  copying hooks included. (GhostBatchNorm1d keeps a transient bn1d.GhostBatchNorm1d instead,
  owned by a saved tensor: hooks that copy the saved tensors are a RuntimeError there.)
* The input, weight and bias must not be modified in place between forward and backward;
  torch's version counter reports it if they are (they are saved for backward, as torch does).

What one forward/backward copies, and what it does not:

* Not copied: the input and grad_output. They are passed to bn1d as numpy views of the torch
  tensors' memory (Tensor.numpy() on the detached tensor, any strides: transposed, sliced,
  expanded tensors are used as they are).
* Not copied: the output, grad_input, grad_weight and grad_bias. bn1d writes them into numpy
  arrays it allocates, which are handed to torch with torch.from_numpy.
* Not copied: weight, bias, running_mean and running_var. bn1d reads them, and updates the
  running statistics in place (training with tracked statistics), through numpy views.
* num_batches_tracked is never copied: it is updated in torch, exactly as torch does.

16-bit inputs run on bn1d's kernels too, in torch's two configurations: mixed (a float32 or
float64 module, bfloat16 or float16 input: BatchNorm1d(C)(x.bfloat16())) and pure (.bfloat16()
or .half() modules, input of the same dtype). The output and grad_input have the input's dtype,
grad_weight and grad_bias the parameters'. Statistics accumulate in float64 and each output is
rounded once. bfloat16 crosses through DLPack (bn1d.BFloat16Tensor), without copies either.
float16 on the CPU has no torch 1.13 kernel: bn1d is its only path.

Inputs that bn1d cannot take are handled by torch: tensors that are not on the CPU, and dtypes
other than float32, float64, bfloat16 and float16 run torch.nn.BatchNorm1d.forward unchanged.
A float64 input to a float32 module (or the converse, or a 16-bit input to a module of the
other 16-bit dtype) is a ValueError from bn1d where torch raises a RuntimeError.

Errors
------
Bad values are ValueErrors, wrong types TypeErrors, raised before anything changes (a failed
forward leaves num_batches_tracked as it was, which torch does not). Where torch raises a
RuntimeError for a bad value (a channel count that is not the module's: "running_mean should
contain 4 elements not 1"), bn1d.torch raises bn1d.torch.Error, a subclass of both ValueError
and RuntimeError, with torch's text; eps/momentum that torch's batch_norm refuses are torch's
TypeError ("argument 'momentum' must be float, not str").

Converting models
-----------------
convert(model) / revert(model) replace, in place and recursively, every submodule whose type is
exactly torch.nn.BatchNorm1d (resp. bn1d.torch.BatchNorm1d) by a module of the other class with
the same options and training flag that shares the original's parameter and buffer tensors
(the same nn.Parameter objects: an optimizer built before the conversion keeps updating them;
nothing is copied, dtype and device are kept). Hooks registered on the replaced modules are not
carried over; subclasses of torch.nn.BatchNorm1d are left alone.

convert(model, fuse_activations=True) first fuses each batch norm (torch.nn.BatchNorm1d, or
bn1d.torch.BatchNorm1d without an activation) directly followed by an nn.ReLU or nn.LeakyReLU
(in place or not) in an nn.Sequential into one bn1d.torch.BatchNorm1d with that activation,
and puts a FusedAway (an nn.Identity holding the original activation) in the activation's
place: indices, names and state_dict keys are unchanged. Left unfused: an activation not
directly after the batch norm, a batch norm outside an nn.Sequential or used at several places,
modules with forward hooks, BatchNorm2d. revert(model) undoes it: the fused module becomes a
torch.nn.BatchNorm1d and the FusedAway its original activation module again.

Folding for inference
---------------------
fold(model, example_input) returns (folded_model, report): an eval-mode deep copy of model in
which every (Linear|Conv1d, BatchNorm1d) and (BatchNorm1d, Linear) pair of an nn.Sequential
whose shapes on the example prove it foldable is folded (bn1d.fold_into_preceding /
fold_into_following) and the batch norm replaced by nn.Identity; report (a FoldReport) lists
what was folded and what was left, and why (see fold's docstring).

Moving state between bn1d.BatchNorm1d and torch
-----------------------------------------------
to_torch(m) builds a bn1d.torch.BatchNorm1d (a torch.nn.BatchNorm1d: revert() it for torch's
own class) from a bn1d.BatchNorm1d, the numpy module: the same num_features, eps, momentum
(None included), affine, track_running_stats, dtype and training flag, and copies of its
weight, bias, running_mean, running_var and num_batches_tracked. from_torch(module) is the
inverse, for a torch.nn.BatchNorm1d (bn1d.torch.BatchNorm1d and other subclasses included) with
float32, float64, bfloat16 or float16 parameters and buffers on any device. Both copy: the
modules are independent afterwards.
"""

from collections.abc import Mapping
from typing import Any, List, Optional, Tuple, Union

import torch

import bn1d

from . import _torch_state
from ._checks import check_activation, valid_positions
from ._torch_checks import (SUPPORTED_DTYPES, AssertionValueError, Error,
                            NotImplementedValueError, _check_features, _check_one_dtype, _real,
                            _torch_errors, _type_name)
from ._torch_convert import check_model, replace, swap
from ._torch_fold import FoldEntry, FoldReport, fold
from ._torch_fuse import FusedAway, fuse, unfuse
from ._torch_ghost import GhostBatchNorm1d
from ._torch_step import (LocalCombiner, StepFunction, StepOptions, activation_repr,
                          apply_activation, check_dtypes, check_savable)
from ._torch_sync import SyncBatchNorm, convert_sync_batchnorm

__all__ = ["BatchNorm1d", "GhostBatchNorm1d", "SyncBatchNorm", "convert", "revert",
           "convert_sync_batchnorm", "to_torch", "from_torch", "fold", "FoldReport",
           "FoldEntry", "FusedAway", "Error",
           "NotImplementedValueError", "AssertionValueError"]

_LOCAL = LocalCombiner()


class BatchNorm1d(torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d computed by bn1d (see the module docstring). Same constructor,
    parameters, buffers and state dict as torch.nn.BatchNorm1d."""

    activation: Optional[str] = None  # instance attributes; these defaults serve old pickles
    negative_slope: float = 0.01

    @_torch_errors
    def __init__(self, *args: Any, activation: Optional[str] = None,
                 negative_slope: float = 0.01, **kwargs: Any) -> None:
        """torch.nn.BatchNorm1d's arguments: num_features, eps=1e-05, momentum=0.1,
        affine=True, track_running_stats=True, device=None, dtype=None; and, keyword only,
        activation (None, "relu" or "leaky_relu") with negative_slope (a finite real
        number), fused into the output."""
        check_activation(activation, negative_slope)
        super().__init__(*args, **kwargs)
        self.activation = activation
        self.negative_slope = negative_slope

    def extra_repr(self) -> str:
        """torch's, then the activation when one is fused."""
        return super().extra_repr() + activation_repr(self)

    # torch's own, its RuntimeErrors also ValueErrors (torch fails to name a meta tensor it
    # refuses as a parameter with "Unimplemented backend Meta").
    __setattr__ = _torch_errors(torch.nn.BatchNorm1d.__setattr__)

    @_torch_errors
    def load_state_dict(self, state_dict: Mapping[str, Any],
                        strict: bool = True) -> Tuple[List[str], List[str]]:
        """torch.nn.Module.load_state_dict: returns torch's (missing_keys, unexpected_keys)
        named tuple; its RuntimeErrors are raised as bn1d.torch.Error."""
        return super().load_state_dict(state_dict, strict)

    @_torch_errors
    def forward(self, input: torch.Tensor, lengths: Any = None,
                mask: Any = None) -> torch.Tensor:
        """Normalizes input, (N, C) or (N, C, L), as torch.nn.BatchNorm1d.forward does: with
        bn1d's kernels for float32, float64, bfloat16 and float16 CPU tensors, torch's
        otherwise (see the module docstring). Call the module, m(input), rather than forward,
        so that hooks run.

        lengths (N integers: sample n is valid at [0, lengths[n])) or mask ((N, L) bool, True =
        valid), tensors or arrays, for an (N, C, L) CPU input: statistics over the valid
        positions only (torch.nn.BatchNorm1d on the packed valid values), 0 in the output and
        the input gradient at the padding (see the module docstring)."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input: expected a torch.Tensor, got {_type_name(input)}")
        lengths, mask = valid_positions(lengths, mask)
        masked = lengths is not None or mask is not None
        if input.layout != torch.strided:
            raise ValueError(f"input: expected a dense (strided) tensor, got layout "
                             f"{input.layout}")
        self._check_input_dim(input)
        activation = check_activation(self.activation, self.negative_slope)
        # What torch raises after num_batches_tracked += 1: before any state changes here.
        use_buffers = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_buffers else None
        running_var = self.running_var if use_buffers else None
        _check_features(input, running_mean=running_mean, running_var=running_var,
                        weight=self.weight, bias=self.bias)
        if (input.device.type != "cpu" or input.dtype not in SUPPORTED_DTYPES
                or (self.weight is None) != (self.bias is None)
                or (self.running_mean is None) != (self.running_var is None)
                or any(t is not None and (t.device != input.device or t.layout != torch.strided)
                       for t in (self.weight, self.bias, self.running_mean, self.running_var))):
            if masked:
                raise ValueError(f"lengths, mask: bn1d's masked batch norm takes float32, "
                                 f"float64, bfloat16 or float16 CPU tensors (and parameters), "
                                 f"got a {input.dtype} input on {input.device}")
            # What bn1d cannot take (another device or dtype; a weight without a bias or a
            # running mean without a running variance, or parameters on another device or
            # sparse, set by hand): torch's own forward, its count restored if it fails.
            count = self.num_batches_tracked
            before = None if count is None or count.is_meta else count.clone()
            try:
                return apply_activation(super().forward(input), activation)
            except BaseException:
                if before is not None:
                    count.copy_(before)
                raise
        eps = _real("eps", self.eps)
        _real("momentum", self.momentum, none_ok=True)

        # torch.nn.BatchNorm1d.forward (torch 1.13), step by step.
        if self.momentum is None:
            exponential_average_factor = 0.0
        else:
            exponential_average_factor = self.momentum
        counted = False
        if self.training and self.track_running_stats:
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                counted = True
                if self.momentum is None:  # cumulative moving average
                    exponential_average_factor = 1.0 / float(self.num_batches_tracked)
                else:  # exponential moving average
                    exponential_average_factor = self.momentum
        if self.training:
            bn_training = True
        else:
            bn_training = self.running_mean is None and self.running_var is None
        try:
            _check_one_dtype(weight=self.weight, bias=self.bias, running_mean=running_mean,
                             running_var=running_var)
            reference = next((t for t in (self.weight, running_mean) if t is not None), input)
            check_dtypes("BatchNorm1d", input, reference.dtype)
            check_savable(input, self.weight, self.bias)
            options = StepOptions(bn_training, _real("momentum", exponential_average_factor),
                                  eps, lengths, mask, _LOCAL, None, *activation)
            return StepFunction.apply(input, self.weight, self.bias, running_mean, running_var,
                                      options)
        except BaseException:
            if counted:  # a failed forward changes nothing: the count is restored
                self.num_batches_tracked.sub_(1)
            raise


def _fused(m: torch.nn.Module) -> bool:
    return type(m) is BatchNorm1d and m.activation is not None


def convert(model: torch.nn.Module, fuse_activations: bool = False) -> torch.nn.Module:
    """Replaces, in place and recursively, every torch.nn.BatchNorm1d of model by a
    bn1d.torch.BatchNorm1d sharing its parameters and buffers; returns model (the new module
    when model itself is a torch.nn.BatchNorm1d). With fuse_activations, each batch norm
    directly followed by an nn.ReLU or nn.LeakyReLU in an nn.Sequential first becomes one
    bn1d.torch.BatchNorm1d with that activation, the activation a FusedAway placeholder (see
    the module docstring). TypeError when model is not a torch.nn.Module or fuse_activations
    not a bool."""
    check_model(model)
    if not isinstance(fuse_activations, bool):
        raise TypeError(f"fuse_activations: expected a bool, got {_type_name(fuse_activations)}")
    if fuse_activations:
        fuse(model, lambda m: type(m) is torch.nn.BatchNorm1d
             or (type(m) is BatchNorm1d and m.activation is None),
             lambda m, activation, slope: swap(m, BatchNorm1d, activation=activation,
                                               negative_slope=slope))
    return replace(model, lambda m: type(m) is torch.nn.BatchNorm1d,
                   lambda m: swap(m, BatchNorm1d))


def revert(model: torch.nn.Module) -> torch.nn.Module:
    """The inverse of convert(): every bn1d.torch.BatchNorm1d becomes a torch.nn.BatchNorm1d
    sharing its parameters and buffers, a fused one followed by its FusedAway placeholder in
    an nn.Sequential together with its original activation module; returns model (or the new
    module). ValueError, before anything changes, for a bn1d.torch.BatchNorm1d with an
    activation anywhere else (torch's class has none)."""
    check_model(model)
    unfuse(model, _fused, lambda m: swap(m, torch.nn.BatchNorm1d))
    return replace(model, lambda m: type(m) is BatchNorm1d,
                   lambda m: swap(m, torch.nn.BatchNorm1d))


def to_torch(module: bn1d.BatchNorm1d) -> BatchNorm1d:
    """A new bn1d.torch.BatchNorm1d with the state of module, a bn1d.BatchNorm1d (numpy).

    Same num_features, eps, momentum (None included), affine, track_running_stats, dtype
    (float32, float64, bfloat16 or float16) and training flag; copies of weight, bias (as
    nn.Parameter), running_mean, running_var and num_batches_tracked (buffers, those that
    exist). The result is a torch.nn.BatchNorm1d too; bn1d.torch.revert(result) gives torch's
    own class. TypeError when module is not a bn1d.BatchNorm1d.
    """
    return _torch_state.to_torch(module, BatchNorm1d)


def from_torch(module: torch.nn.BatchNorm1d,
               dtype: Optional[Union[str, torch.dtype]] = None) -> bn1d.BatchNorm1d:
    """A new bn1d.BatchNorm1d (numpy) with the state of module, a torch.nn.BatchNorm1d
    (bn1d.torch.BatchNorm1d and other subclasses included), the inverse of to_torch().

    Same options and training flag; copies of the parameters and buffers (from any device).
    dtype ("float32", "float64", "bfloat16", "float16" or the torch dtype) defaults to that of
    the module's parameters and buffers, float32 for a module that has none; it is never
    converted. TypeError for other modules; ValueError for other dtypes, parameters or buffers of
    different dtypes or not matching the options (set to None by hand), or a dtype argument
    that is not theirs.
    """
    return _torch_state.from_torch(module, dtype)
