# SPDX-License-Identifier: MIT
"""Fusing each ReLU/LeakyReLU of an nn.Sequential into the batch norm just before it
(bn1d.torch.convert(model, fuse_activations=True)) and undoing it (bn1d.torch.revert): the
activation's slot keeps a FusedAway placeholder, so indices, names and state_dict keys stay."""

from typing import Callable, Dict, List, Optional, Tuple

import torch

_DEFAULT_SLOPE = 0.01  # LeakyReLU's default, kept (unused) for a fused ReLU


class FusedAway(torch.nn.Identity):
    """The identity left where an activation was fused into the batch norm before it. It holds
    the original activation module as the attribute original (not a submodule: named_modules()
    and state_dict() do not list it), which bn1d.torch.revert puts back."""

    def __init__(self, original: torch.nn.Module) -> None:
        super().__init__()
        self.__dict__["original"] = original  # bypasses nn.Module's submodule registration

    def extra_repr(self) -> str:
        return f"fused into the batch norm before it: {self.original!r}"


def activation_of(module: torch.nn.Module) -> Optional[Tuple[str, float]]:
    """(activation, negative_slope) of a fusable activation module (exactly nn.ReLU or
    nn.LeakyReLU, in place or not), None for any other module."""
    if type(module) is torch.nn.ReLU:
        return "relu", _DEFAULT_SLOPE
    if type(module) is torch.nn.LeakyReLU:
        return "leaky_relu", float(module.negative_slope)
    return None


def activation_module(activation: Optional[str], negative_slope: float) -> torch.nn.Module:
    """A new module computing activation (None: nn.Identity)."""
    if activation == "relu":
        return torch.nn.ReLU()
    if activation == "leaky_relu":
        return torch.nn.LeakyReLU(negative_slope)
    return torch.nn.Identity()


def _has_hooks(module: torch.nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _slots(model: torch.nn.Module) -> List[Tuple[torch.nn.Module, str, str]]:
    """(sequential, key, next key) for consecutive children of every nn.Sequential of model
    (model included; exactly nn.Sequential, whose forward chains its children)."""
    slots = []
    for parent in model.modules():
        if type(parent) is torch.nn.Sequential:
            keys = [k for k, m in parent._modules.items() if m is not None]
            slots.extend((parent, a, b) for a, b in zip(keys, keys[1:]))
    return slots


def fuse(model: torch.nn.Module, fusable: Callable[[torch.nn.Module], bool],
         make: Callable[[torch.nn.Module, str, float], torch.nn.Module]) -> None:
    """Replaces, in place, each batch norm bn (fusable(bn)) directly followed by an nn.ReLU or
    nn.LeakyReLU in an nn.Sequential by make(bn, activation, negative_slope), and the
    activation by a FusedAway. Left alone: modules used at several places (the other places
    would change too) and modules with forward hooks (they would see other values)."""
    occurrences: Dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        occurrences[id(m)] = occurrences.get(id(m), 0) + 1
    for parent, bn_key, act_key in _slots(model):
        bn, act = parent._modules[bn_key], parent._modules[act_key]
        spec = activation_of(act)
        if (spec is None or not fusable(bn) or occurrences[id(bn)] > 1
                or _has_hooks(bn) or _has_hooks(act)):
            continue
        parent._modules[bn_key] = make(bn, *spec)
        parent._modules[act_key] = FusedAway(act)


def unfuse(model: torch.nn.Module, fused: Callable[[torch.nn.Module], bool],
           make: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
    """Undoes fuse(), in place: each fused batch norm (fused(m)) followed by a FusedAway
    becomes make(m) and the placeholder its original activation again. ValueError, before
    anything changes, for a fused batch norm anywhere else (its activation would be lost)."""
    pairs = [(parent, a, b) for parent, a, b in _slots(model)
             if fused(parent._modules[a]) and type(parent._modules[b]) is FusedAway]
    paired = {(id(parent), a) for parent, a, _ in pairs}
    for name, parent in model.named_modules():
        for key, child in parent._modules.items():
            if child is not None and fused(child) and (id(parent), key) not in paired:
                where = f"{name}.{key}" if name else key
                raise ValueError(_unpaired(where, child))
    if fused(model):
        raise ValueError(_unpaired("model", model))
    memo: Dict[int, torch.nn.Module] = {}
    for parent, bn_key, act_key in pairs:
        bn = parent._modules[bn_key]
        if id(bn) not in memo:
            memo[id(bn)] = make(bn)
        parent._modules[bn_key] = memo[id(bn)]
        parent._modules[act_key] = parent._modules[act_key].original


def _unpaired(where: str, module: torch.nn.Module) -> str:
    return (f"model: {where} has activation={module.activation!r} but is not followed by the "
            f"FusedAway placeholder of convert(model, fuse_activations=True) in an "
            f"nn.Sequential; torch.nn.BatchNorm1d has no activation: put the activation module "
            f"after it and build it with activation=None")
