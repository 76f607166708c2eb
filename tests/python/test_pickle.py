# SPDX-License-Identifier: MIT
"""pickle (every protocol), copy.deepcopy and copy.copy of bn1d.BatchNorm1d: the whole module
round-trips (options as given, dtype, parameters, buffers, count, training flag), the copy
computes as torch does from the original's state, and copies are independent."""

import copy
import pickle

import numpy as np
import pytest
import torch

import bn1d

C = 4
PROTOCOLS = list(range(pickle.HIGHEST_PROTOCOL + 1))
COPIERS = {**{f"pickle-{p}": (lambda p: lambda m: pickle.loads(pickle.dumps(m, protocol=p)))(p)
              for p in PROTOCOLS},
           "deepcopy": copy.deepcopy, "copy": copy.copy}
CONFIGS = {
    "trained": dict(kwargs={}, steps=3, eval=False),
    "eval": dict(kwargs={}, steps=2, eval=True),
    "untrained": dict(kwargs={}, steps=0, eval=False),
    "no-affine": dict(kwargs={"affine": False}, steps=2, eval=False),
    "no-track": dict(kwargs={"track_running_stats": False}, steps=2, eval=False),
    "no-affine-no-track": dict(kwargs={"affine": False, "track_running_stats": False}, steps=1,
                               eval=True),
    "momentum-none": dict(kwargs={"momentum": None}, steps=3, eval=False),
    "float64": dict(kwargs={"dtype": np.float64, "eps": 1e-3}, steps=2, eval=True),
    "numpy-options": dict(kwargs={"eps": np.float32(0.5), "momentum": np.float64(0.25)},
                          steps=1, eval=False),
}


def _dtype(m):
    return np.float64 if m.dtype == np.float64 else np.float32


def _inputs(n, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(2.0, 3.0, size=(5, C, 2)).astype(dtype) for _ in range(n)]


def _module(config):
    m = bn1d.BatchNorm1d(C, **config["kwargs"])
    if m.affine:
        rng = np.random.default_rng(1)
        m.weight = rng.uniform(0.5, 1.5, C)
        m.bias = rng.uniform(-1, 1, C)
    for x in _inputs(config["steps"], _dtype(m), seed=2):
        m(x)
    if config["eval"]:
        m.eval()
    return m


def _torch_twin(m):
    """A torch.nn.BatchNorm1d with m's options, state and mode: the oracle for a copy."""
    kw = m._given
    momentum = None if kw["momentum"] is None else float(kw["momentum"])
    ref = torch.nn.BatchNorm1d(kw["num_features"], eps=float(kw["eps"]), momentum=momentum,
                               affine=m.affine, track_running_stats=m.track_running_stats,
                               dtype=torch.float64 if m.dtype == np.float64 else torch.float32)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    return ref.train(m.training)


def _assert_same_module(a, b):
    assert type(a) is type(b) and a is not b
    assert repr(a) == repr(b)
    for name in ("num_features", "eps", "momentum", "affine", "track_running_stats", "dtype",
                 "training", "num_batches_tracked"):
        assert getattr(a, name) == getattr(b, name), name
        assert type(getattr(a, name)) is type(getattr(b, name)), name
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.mark.parametrize("copier", list(COPIERS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_round_trip(config, copier):
    m = _module(CONFIGS[config])
    ref = _torch_twin(m)
    clone = COPIERS[copier](m)
    _assert_same_module(m, clone)
    # The copy computes as torch does from the original's state, in the original's mode.
    tol = dict(rtol=1e-5, atol=1e-5)
    for x in _inputs(2, _dtype(m), seed=3):
        np.testing.assert_allclose(clone(x), ref(torch.from_numpy(x)).detach().numpy(), **tol)
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(clone.state_dict()[k], v.numpy(), **tol, err_msg=k)


@pytest.mark.parametrize("copier", list(COPIERS))
def test_copies_are_independent(copier):
    m = _module(CONFIGS["trained"])
    clone = COPIERS[copier](m)
    before = m.state_dict()
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert not np.shares_memory(getattr(m, name), getattr(clone, name)), name
    clone.weight[:] = 7.0
    clone.eps, clone.momentum = 0.5, None
    clone.eval()
    for x in _inputs(2, np.float32, seed=4):
        clone.train()(x)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert (m.eps, m.momentum, m.training) == (1e-05, 0.1, True)
    # ...and the other way round.
    snapshot = clone.state_dict()
    m.bias[:] = -3.0
    m(_inputs(1, np.float32, seed=5)[0])
    for k, v in clone.state_dict().items():
        np.testing.assert_array_equal(v, snapshot[k], err_msg=k)


@pytest.mark.parametrize("copier", list(COPIERS))
def test_backward_needs_a_forward_after_copying(copier):
    """What forward saved for backward is not copied: backward on the copy is the clear error,
    and the original still has its forward."""
    m = bn1d.BatchNorm1d(C)
    x = _inputs(1, np.float32, seed=6)[0]
    y = m(x)
    clone = COPIERS[copier](m)
    with pytest.raises(ValueError, match="backward called before forward"):
        clone.backward(np.ones_like(y))
    ref = torch.nn.BatchNorm1d(C)
    tx = torch.from_numpy(x).requires_grad_()
    ref(tx).sum().backward()
    grad_input, grad_weight, grad_bias = m.backward(np.ones_like(y))
    np.testing.assert_allclose(grad_input, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_bias, ref.bias.grad.numpy(), rtol=1e-5, atol=1e-5)
    clone(x)  # after a forward, backward works on the copy
    np.testing.assert_allclose(clone.backward(np.ones_like(y))[0], tx.grad.numpy(), rtol=1e-4,
                               atol=1e-5)


def test_pickle_holds_no_saved_input():
    m = bn1d.BatchNorm1d(C)
    big = np.random.default_rng(7).normal(size=(50_000, C)).astype(np.float32)  # 800 KB
    m(big)
    assert len(pickle.dumps(m)) < 10_000


def test_assigned_options_round_trip():
    m = _module(CONFIGS["trained"])
    m.eps, m.momentum = 0.25, None
    clone = pickle.loads(pickle.dumps(m))
    assert (clone.eps, clone.momentum) == (0.25, None)
    ref = _torch_twin(m)
    for x in _inputs(2, np.float32, seed=8):
        np.testing.assert_allclose(clone(x), ref(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(clone.running_var, ref.running_var.numpy(), rtol=1e-5, atol=1e-6)


class _Tagged(bn1d.BatchNorm1d):
    """A subclass with an attribute of its own (at module level, so that pickle finds it)."""

    def __init__(self, num_features, tag):
        super().__init__(num_features, momentum=0.5)
        self.tag = tag


def test_subclass_round_trips_its_attributes():
    m = _Tagged(C, tag=["a", 1])
    m(_inputs(1, np.float32, seed=9)[0])
    clone = copy.deepcopy(m)
    assert type(clone) is _Tagged and clone.tag == ["a", 1] and clone.tag is not m.tag
    _assert_same_module(m, clone)


@pytest.mark.parametrize("edit", [
    lambda s: s.pop("options"),
    lambda s: s.update(extra=1),
    lambda s: s.update(options={"num_features": 3, "bogus": 1}),
    lambda s: s.update(options=[3]),
    lambda s: s["attributes"].update(_given={"num_features": 99}),
    lambda s: s["attributes"].update(_m=5),
    lambda s: s.update(attributes=[1]),
    lambda s: s.update(training="yes"),
])
def test_malformed_pickled_state_is_a_clear_error(edit):
    state = bn1d.BatchNorm1d(3).__getstate__()
    edit(state)
    fresh = bn1d.BatchNorm1d.__new__(bn1d.BatchNorm1d)
    with pytest.raises(ValueError, match="BatchNorm1d|training mode"):
        fresh.__setstate__(state)
    assert vars(fresh) == {}


def test_pickled_state_that_is_not_a_dict():
    fresh = bn1d.BatchNorm1d.__new__(bn1d.BatchNorm1d)
    with pytest.raises(ValueError, match="expected a dict with keys"):
        fresh.__setstate__(("options",))
