# SPDX-License-Identifier: MIT
"""Replacing the batch norms of a model by other batch norm classes that share their parameters
and buffers (bn1d.torch.convert, revert, convert_sync_batchnorm)."""

import torch

from ._torch_checks import _type_name


def swap(module, target, **options):
    """A target module with the options, training flag, parameters and buffers (the same
    tensor objects) of module, a batch norm; options: more constructor arguments."""
    ref = module.weight if module.weight is not None else module.running_mean
    kw = {} if ref is None else dict(device=ref.device, dtype=ref.dtype)
    new = target(module.num_features, eps=module.eps, momentum=module.momentum,
                 affine=module.affine, track_running_stats=module.track_running_stats, **kw,
                 **options)
    new._parameters.clear()
    new._parameters.update(module._parameters)
    new._buffers.clear()
    new._buffers.update(module._buffers)
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    new.train(module.training)
    return new


def replace(model, matches, make):
    """model with every submodule m for which matches(m) replaced by make(m), in place and
    recursively (model itself: the new module is returned)."""
    memo = {}  # a module used at several places becomes one new module

    def swapped(m):
        if id(m) not in memo:
            memo[id(m)] = make(m)
        return memo[id(m)]

    if matches(model):
        return swapped(model)
    seen = set()

    def visit(parent):
        if id(parent) in seen:
            return
        seen.add(id(parent))
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if matches(child):
                parent._modules[name] = swapped(child)
            else:
                visit(child)

    visit(model)
    return model


def check_model(model):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {_type_name(model)}")
