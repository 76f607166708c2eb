# SPDX-License-Identifier: MIT
"""bn1d.torch.fold(model, example_input): the batch norms of a model's nn.Sequentials folded
into the Linear or Conv1d next to them, in an eval-mode copy, where the shapes that the example
produces prove it correct; the report says what was folded and what was left, and why."""

import copy
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

import bn1d

from ._torch_checks import _type_name
from ._torch_fuse import activation_module
from ._torch_state import from_torch

_NO_STATS = "no running statistics, cannot fold (pytorch#71259)"
_NOT_RUN = "not run by the example"


class FoldEntry(NamedTuple):
    """One (layer, batch norm) or (batch norm, layer) pair: the module names as in
    model.named_modules(), their classes ("torch.nn.Linear", "bn1d.torch.BatchNorm1d"), and
    why it was folded or left ("folded" for those folded)."""
    names: Tuple[str, str]
    types: Tuple[str, str]
    reason: str

    def __str__(self) -> str:
        pair = ", ".join(f"{n} ({t})" for n, t in zip(self.names, self.types))
        return f"{pair}: {self.reason}"


class FoldReport:
    """What bn1d.torch.fold did: .folded and .left, lists of FoldEntry."""

    def __init__(self) -> None:
        self.folded: List[FoldEntry] = []
        self.left: List[FoldEntry] = []

    def __str__(self) -> str:
        lines = [f"folded {len(self.folded)} pair(s), left {len(self.left)}"]
        lines += [f"  folded: {e}" for e in self.folded]
        lines += [f"  left:   {e}" for e in self.left]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"FoldReport(folded={self.folded!r}, left={self.left!r})"


def _class_name(m: torch.nn.Module) -> str:
    """torch.nn.Linear, bn1d.torch.BatchNorm1d: short enough to read, long enough to tell
    torch's BatchNorm1d from bn1d's."""
    cls = type(m)
    module = "torch.nn" if cls.__module__.startswith("torch.nn.modules.") else cls.__module__
    return f"{module}.{cls.__qualname__}"


def _is_bn(m: Any) -> bool:
    """A batch norm fold() pairs: any torch.nn.BatchNorm1d; only torch's own class and
    bn1d.torch.BatchNorm1d are folded (another subclass's forward may differ)."""
    return isinstance(m, torch.nn.BatchNorm1d)


def _foldable_bn(m: Any) -> bool:
    from .torch import BatchNorm1d
    return type(m) in (torch.nn.BatchNorm1d, BatchNorm1d)


def _is_layer(m: Any) -> bool:
    return type(m) in (torch.nn.Linear, torch.nn.Conv1d)


class _Pair(NamedTuple):
    parent: torch.nn.Sequential
    keys: Tuple[str, str]  # the children's keys in parent._modules
    names: Tuple[str, str]  # their names in model.named_modules()
    bn_first: bool

    def modules(self) -> Tuple[torch.nn.Module, torch.nn.Module]:
        return self.parent._modules[self.keys[0]], self.parent._modules[self.keys[1]]


def _pairs(model: torch.nn.Module) -> List[_Pair]:
    """Every (Linear|Conv1d, BN) and (BN, Linear|Conv1d) pair of consecutive children of an
    nn.Sequential of model, in order ((BN, Conv1d): to report it)."""
    found = []
    for name, seq in model.named_modules():
        if type(seq) is not torch.nn.Sequential:
            continue
        children = [(k, m) for k, m in seq._modules.items() if m is not None]
        for (k0, m0), (k1, m1) in zip(children, children[1:]):
            if (_is_layer(m0) and _is_bn(m1)) or (_is_bn(m0) and _is_layer(m1)):
                names = tuple(f"{name}.{k}" if name else k for k in (k0, k1))
                found.append(_Pair(seq, (k0, k1), names, _is_bn(m0)))
    return found


def _record_shapes(model: torch.nn.Module, modules: List[torch.nn.Module],
                   args: Tuple[torch.Tensor, ...]) -> Dict[int, List[Tuple[Any, Any]]]:
    """{id(module): [(input shape, output shape) per call]} for one run of model(*args)."""
    calls: Dict[int, List[Tuple[Any, Any]]] = {id(m): [] for m in modules}

    def shape(v: Any) -> Any:
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    def hook(module: torch.nn.Module, inputs: Tuple[Any, ...], output: Any) -> None:
        calls[id(module)].append((shape(inputs[0]) if inputs else None, shape(output)))

    handles = [m.register_forward_hook(hook) for m in {id(m): m for m in modules}.values()]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return calls


def _shape_reason(pair: _Pair, layer: torch.nn.Module, bn: torch.nn.Module,
                  bn_input: Tuple[int, ...]) -> Optional[str]:
    """None when bn_input, the shape between the pair's modules, proves the pair foldable,
    else why not; ValueError when the feature counts disagree."""
    if pair.bn_first:
        features, what = layer.in_features, "in_features"
        if len(bn_input) != 2:
            return (f"the BatchNorm1d input is {bn_input}, not (N, C): the Linear acts on its "
                    f"last dimension, not on C (pytorch/ao#4116)")
    elif type(layer) is torch.nn.Linear:
        features, what = layer.out_features, "out_features"
        if len(bn_input) != 2:
            return (f"the Linear output is {bn_input}, not (N, C): the Linear acts on the last "
                    f"dimension while BatchNorm1d normalizes C (pytorch/ao#4116)")
    else:
        features, what = layer.out_channels, "out_channels"
        if len(bn_input) != 3:
            return (f"the Conv1d output is {bn_input}, not (N, C, L): BatchNorm1d does not "
                    f"normalize its channels")
    if features != bn.num_features or bn_input[1] != bn.num_features:
        layer_name = pair.names[1] if pair.bn_first else pair.names[0]
        bn_name = pair.names[0] if pair.bn_first else pair.names[1]
        raise ValueError(f"model: {layer_name} has {what}={features} but {bn_name} has "
                         f"num_features={bn.num_features}")
    return None


def _reason(pair: _Pair, calls: Dict[int, List[Tuple[Any, Any]]],
            occurrences: Dict[int, int]) -> Optional[str]:
    """None when the pair can be folded, else why it is left in place."""
    first, second = pair.modules()
    bn, layer = (first, second) if pair.bn_first else (second, first)
    if pair.bn_first and type(layer) is torch.nn.Conv1d:
        return "a Conv1d after a batch norm cannot be folded: its zero padding is not normalized"
    if not _foldable_bn(bn):
        return "a subclass of torch.nn.BatchNorm1d, whose forward may differ"
    if pair.bn_first and getattr(bn, "activation", None) is not None:
        return (f"the batch norm has a fused activation ({bn.activation}): the Linear after it "
                f"sees act(bn(x)), which is not affine")
    if any(m._forward_hooks or m._forward_pre_hooks for m in (first, second)):
        return "a module of the pair has forward hooks (folding would change what they see)"
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return _NO_STATS
    if any(occurrences[id(m)] > 1 for m in (first, second)):
        return "a module of the pair is used at several places of the model"
    parent_calls = len(calls[id(pair.parent)])
    if parent_calls == 0 or not calls[id(first)] or not calls[id(second)]:
        return _NOT_RUN
    if any(len(calls[id(m)]) != parent_calls for m in (first, second)):
        return "a module of the pair is also run outside its nn.Sequential"
    if any(call[0] is None or call[1] is None for m in (first, second) for call in calls[id(m)]):
        return "a module of the pair does not take or return a tensor"
    # The shape between the two modules: the output of the first (the input of the second).
    between = {call[1] for call in calls[id(first)]}
    if len(between) != 1:
        return f"the example ran the pair on different shapes {sorted(between)}"
    return _shape_reason(pair, layer, bn, between.pop())


def _as_tensor(a: Any, like: torch.Tensor) -> torch.Tensor:
    """The fold result a (numpy array or BFloat16Tensor) as a tensor on like's device."""
    t = torch.from_numpy(a) if isinstance(a, np.ndarray) else torch.from_dlpack(a)
    return t.to(device=like.device, dtype=like.dtype)


def _fold_pair(pair: _Pair) -> None:
    """Folds the pair's batch norm into its layer (new nn.Parameters) and puts an
    nn.Identity in the batch norm's place (its fused activation's module, if it has one)."""
    first, second = pair.modules()
    bn, layer = (first, second) if pair.bn_first else (second, first)
    state = from_torch(bn, with_activation=False).eval()  # the activation follows the layer
    fold = bn1d.fold_into_following if pair.bn_first else bn1d.fold_into_preceding
    weight = layer.weight.detach().cpu()
    bias = None if layer.bias is None else layer.bias.detach().cpu()
    try:
        new_weight, new_bias = fold(state, weight, bias)
    except ValueError as e:  # bn1d's own message (running_var + eps < 0, ...), with the names
        raise ValueError(f"model: cannot fold {pair.names[0]} and {pair.names[1]}: {e}") \
            from None
    requires_grad = layer.weight.requires_grad
    layer.weight = torch.nn.Parameter(_as_tensor(new_weight, layer.weight), requires_grad)
    layer.bias = torch.nn.Parameter(_as_tensor(new_bias, layer.weight), requires_grad)
    pair.parent._modules[pair.keys[0] if pair.bn_first else pair.keys[1]] = activation_module(
        getattr(bn, "activation", None), getattr(bn, "negative_slope", 0.01))


def _example_args(example_input: Any) -> Tuple[torch.Tensor, ...]:
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if (isinstance(example_input, tuple) and example_input
            and all(isinstance(t, torch.Tensor) for t in example_input)):
        return example_input
    raise TypeError(f"example_input: expected a torch.Tensor or a tuple of tensors (the "
                    f"model's arguments), got {_type_name(example_input)}")


def fold(model: torch.nn.Module, example_input: Any) -> Tuple[torch.nn.Module, FoldReport]:
    """(folded_model, report): an eval-mode deep copy of model with its batch norms folded.

    Every (Linear|Conv1d, BatchNorm1d) and (BatchNorm1d, Linear) pair of consecutive children
    of an nn.Sequential (at any depth; torch.nn.BatchNorm1d or bn1d.torch.BatchNorm1d) is folded
    when one run of the copy on example_input (a tensor, or a tuple of tensors passed as
    arguments; under torch.no_grad) shows the shapes that make it correct: a Linear output
    (N, C) or Conv1d output (N, C, L) before the batch norm, a batch norm input (N, C) before a
    Linear. The layer gets new weight and bias parameters (bias created if it had none; same
    dtype and device) from bn1d.fold_into_preceding / fold_into_following, and the batch norm
    becomes nn.Identity() (a batch norm with a fused activation: that activation's nn.ReLU or
    nn.LeakyReLU; one before a Linear is left). Left in place, with the reason in report.left:
    batch norms without
    running statistics, a Linear acting on L of an (N, C, L) batch norm input
    (pytorch/ao#4116), a Conv1d after a batch norm, pairs the example did not run, modules
    used at several places or run outside their nn.Sequential, modules with forward hooks,
    other subclasses of torch.nn.BatchNorm1d. model is not changed (training flag included).
    TypeError for a model that is not a torch.nn.Module or an example that is not a tensor or
    tuple of tensors; ValueError for a layer whose feature count is not the batch norm's or a batch
    norm that bn1d cannot fold (running_var + eps negative or NaN); the example run's own errors
    propagate.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {_type_name(model)}")
    args = _example_args(example_input)
    folded = copy.deepcopy(model).eval()
    pairs = _pairs(folded)
    watched = [m for p in pairs for m in (p.parent,) + p.modules()]
    calls = _record_shapes(folded, watched, args)
    occurrences: Dict[int, int] = {}
    for _, m in folded.named_modules(remove_duplicate=False):
        occurrences[id(m)] = occurrences.get(id(m), 0) + 1
    report = FoldReport()
    for pair in pairs:
        first, second = pair.modules()
        if not (_is_bn(first) or _is_bn(second)):
            continue  # a batch norm between two Linears, folded into the first: nn.Identity
        types = (_class_name(first), _class_name(second))
        reason = _reason(pair, calls, occurrences)
        if reason is None:
            _fold_pair(pair)
            report.folded.append(FoldEntry(pair.names, types, "folded"))
        else:
            report.left.append(FoldEntry(pair.names, types, reason))
    return folded, report
