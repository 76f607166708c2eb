# SPDX-License-Identifier: MIT
"""bn1d's kernels behind a torch.nn.Module: a drop-in for torch.nn.BatchNorm1d.

    import bn1d.torch
    bn = bn1d.torch.BatchNorm1d(32)          # same constructor as torch.nn.BatchNorm1d
    model = bn1d.torch.convert(model)        # every torch.nn.BatchNorm1d -> bn1d.torch.BatchNorm1d
    model = bn1d.torch.revert(model)         # and back
    t = bn1d.torch.to_torch(m)               # a bn1d.BatchNorm1d (numpy) -> a torch module
    m = bn1d.torch.from_torch(t)             # and back

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

Padded batches: forward(x, lengths=None, mask=None) takes the valid positions of an (N, C, L)
batch (lengths: N integers, sample n valid at [0, lengths[n]); mask: (N, L) bool, True = valid;
tensors on any device or arrays). Statistics, running statistics and gradients at the valid
positions are those of torch.nn.BatchNorm1d on the packed values x.permute(0, 2, 1)[valid];
the output and the input gradient are 0 at the padding. CPU inputs only (a ValueError
otherwise: torch has no masked batch norm to fall back on).

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

import functools
import numbers
from collections.abc import Mapping
from typing import Any, List, Optional, Tuple, Union

import torch

import bn1d

from . import _torch_state
from ._checks import valid_positions
from ._torch_autograd import _copy_into, _holder, _saved_backward, _tensor, _view
from ._torch_step import LocalCombiner, StepFunction, StepOptions, check_dtypes

__all__ = ["BatchNorm1d", "GhostBatchNorm1d", "convert", "revert", "to_torch", "from_torch",
           "Error", "NotImplementedValueError", "AssertionValueError"]

_SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_LOCAL = LocalCombiner()


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


class BatchNorm1d(torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d computed by bn1d (see the module docstring). Same constructor,
    parameters, buffers and state dict as torch.nn.BatchNorm1d."""

    @_torch_errors
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """torch.nn.BatchNorm1d's arguments: num_features, eps=1e-05, momentum=0.1,
        affine=True, track_running_stats=True, device=None, dtype=None."""
        super().__init__(*args, **kwargs)

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
        # What torch raises after num_batches_tracked += 1: before any state changes here.
        use_buffers = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_buffers else None
        running_var = self.running_var if use_buffers else None
        _check_features(input, running_mean=running_mean, running_var=running_var,
                        weight=self.weight, bias=self.bias)
        if (input.device.type != "cpu" or input.dtype not in _SUPPORTED_DTYPES
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
                return super().forward(input)
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
            options = StepOptions(bn_training, _real("momentum", exponential_average_factor),
                                  eps, lengths, mask, _LOCAL)
            return StepFunction.apply(input, self.weight, self.bias, running_mean, running_var,
                                      options)
        except BaseException:
            if counted:  # a failed forward changes nothing: the count is restored
                self.num_batches_tracked.sub_(1)
            raise


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
                or input.dtype not in _SUPPORTED_DTYPES):
            raise ValueError(f"input: expected a dense float32, float64, bfloat16 or float16 "
                             f"CPU tensor, got a {input.dtype} {input.layout} tensor on "
                             f"{input.device}")
        options = (self.virtual_batch_size, self.split,
                   _real("momentum", self.momentum, none_ok=True), _real("eps", self.eps))
        return _GhostFunction.apply(input, self.weight, self.bias, self.running_mean,
                                    self.running_var, self.num_batches_tracked, self.training,
                                    options)


def _swap(module, source, target):
    """A target module with the options, training flag, parameters and buffers (the same
    tensor objects) of module, an instance of source."""
    ref = module.weight if module.weight is not None else module.running_mean
    kw = {} if ref is None else dict(device=ref.device, dtype=ref.dtype)
    new = target(module.num_features, eps=module.eps, momentum=module.momentum,
                 affine=module.affine, track_running_stats=module.track_running_stats, **kw)
    new._parameters.clear()
    new._parameters.update(module._parameters)
    new._buffers.clear()
    new._buffers.update(module._buffers)
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    new.train(module.training)
    return new


def _replace(model, source, target):
    memo = {}  # a module used at several places becomes one new module

    def swapped(m):
        if id(m) not in memo:
            memo[id(m)] = _swap(m, source, target)
        return memo[id(m)]

    if type(model) is source:
        return swapped(model)
    seen = set()

    def visit(parent):
        if id(parent) in seen:
            return
        seen.add(id(parent))
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if type(child) is source:
                parent._modules[name] = swapped(child)
            else:
                visit(child)

    visit(model)
    return model


def _check_model(model):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {_type_name(model)}")


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Replaces, in place and recursively, every torch.nn.BatchNorm1d of model by a
    bn1d.torch.BatchNorm1d sharing its parameters and buffers; returns model (the new module
    when model itself is a torch.nn.BatchNorm1d). TypeError when model is not a
    torch.nn.Module."""
    _check_model(model)
    return _replace(model, torch.nn.BatchNorm1d, BatchNorm1d)


def revert(model: torch.nn.Module) -> torch.nn.Module:
    """The inverse of convert(): every bn1d.torch.BatchNorm1d becomes a torch.nn.BatchNorm1d
    sharing its parameters and buffers; returns model (or the new module)."""
    _check_model(model)
    return _replace(model, BatchNorm1d, torch.nn.BatchNorm1d)


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
