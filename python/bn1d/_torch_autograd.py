# SPDX-License-Identifier: MIT
"""The plumbing of bn1d.torch's autograd functions: numpy views of torch tensors and back, the
transient bn1d module a ghost forward leaves for backward (owned by a saved "holder" tensor), and
gradients that refuse a second derivative."""

import weakref

import numpy as np
import torch

import bn1d


def _view(t):
    """A numpy view of the CPU tensor t (no copy; any strides), a bn1d.BFloat16Tensor view for
    bfloat16."""
    t = t.detach().resolve_neg().resolve_conj()
    if t.dtype == torch.bfloat16:
        return bn1d.BFloat16Tensor.from_dlpack(t)
    return t.numpy()


def _copy_into(module, name, t):
    """Copies the CPU tensor t into the parameter or buffer name of the bn1d module."""
    source = _view(t)
    if isinstance(source, np.ndarray):
        getattr(module, name)[...] = source
    else:  # bfloat16: BatchNorm1d's setter copies the bits
        setattr(module, name, source)


def _tensor(a):
    """The torch tensor sharing the memory of a, a numpy array or a bn1d.BFloat16Tensor."""
    return torch.from_dlpack(a) if isinstance(a, bn1d.BFloat16Tensor) else torch.from_numpy(a)


class _Saved:
    """What backward needs: the transient bn1d module of one forward."""
    __slots__ = ("module", "__weakref__")

    def __init__(self, module):
        self.module = module


class _KeepAlive(np.ndarray):
    """A numpy array whose attribute keep holds a _Saved."""


# The _Saved of each live holder, by the address of the holder's memory.
_SAVED = weakref.WeakValueDictionary()


def _holder(module):
    """A one-byte tensor that owns module, for save_for_backward: its storage is a numpy array
    that holds module, shared by the detached copies and recomputed tensors that saved-tensor
    hooks (save_on_cpu, non-reentrant checkpointing) hand back. The module lives as long as
    torch keeps the storage."""
    array = np.zeros(1, np.uint8).view(_KeepAlive)
    array.keep = _Saved(module)
    _SAVED[array.ctypes.data] = array.keep
    return torch.from_numpy(array)


def _saved_module(holder):
    """The module a _holder() tensor (or a tensor sharing its memory) owns."""
    saved = _SAVED.get(holder.data_ptr())
    if saved is None:
        raise RuntimeError(
            "bn1d.torch.GhostBatchNorm1d: the state saved for backward is gone: a saved-tensor "
            "hook (torch.autograd.graph.saved_tensors_hooks) replaced the saved tensors by "
            "copies; run it outside such hooks")
    return saved.module


class _FirstOrderOnly(torch.autograd.Function):
    """The identity on gradients computed by a backward under create_graph:
    they stay connected to what they depend on (the extra inputs) and differentiating them
    raises, where otherwise they would be constants and a second derivative silently wrong."""

    @staticmethod
    def forward(ctx, count, *tensors):
        return tensors[:count]

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError(
            "bn1d.torch.BatchNorm1d has no second derivative (double backward); "
            "bn1d.torch.revert(model) gives torch.nn.BatchNorm1d, which has one")


def _first_order_only(grads, depends_on):
    """grads (None where absent) connected through _FirstOrderOnly to the tensors of depends_on
    that require grad; grads unchanged when none does."""
    sources = [t for t in depends_on if t is not None and t.requires_grad]
    if not sources:
        return grads
    present = [g for g in grads if g is not None]
    wrapped = iter(_FirstOrderOnly.apply(len(present), *present, *sources))
    return tuple(None if g is None else next(wrapped) for g in grads)


def _saved_backward(ctx, grad_output):
    """The input, weight and bias gradients of a bn1d forward whose module a _holder() saved in
    ctx with the input, weight and bias (torch's version check then catches in-place changes);
    under create_graph they refuse a second order."""
    input, weight, bias, holder = ctx.saved_tensors
    grads = tuple(None if a is None else _tensor(a)
                  for a in _saved_module(holder).backward(_view(grad_output)))
    if torch.is_grad_enabled():
        grads = _first_order_only(grads, (input, weight, bias, grad_output))
    return grads
