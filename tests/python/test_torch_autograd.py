# SPDX-License-Identifier: MIT
"""bn1d.torch's autograd: backward through a retained graph, gradcheck in float64, a second
derivative refused clearly, and the lifetime of what the graph keeps for backward.

torch.nn.BatchNorm1d (torch 1.13) is the oracle for values and for the errors torch raises;
torch.autograd.gradcheck compares bn1d's backward with finite differences of its forward.
"""

import gc

import pytest
import torch
import torch.utils.checkpoint

import bn1d
import bn1d.torch as bt

SHAPES = [(6, 3), (5, 3, 4)]


def make_pair(shape, affine=True, track=True, training=True, momentum=0.1, seed=0):
    """(bn1d.torch module, torch module) with the same random parameters and running
    statistics, float64, in the given mode; and a random input requiring grad."""
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    kw = dict(affine=affine, track_running_stats=track, momentum=momentum,
              dtype=torch.float64)
    oracle = torch.nn.BatchNorm1d(C, **kw)
    with torch.no_grad():
        if affine:
            oracle.weight.copy_(torch.rand(C, generator=g, dtype=torch.float64) + 0.5)
            oracle.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
        if track:
            oracle.running_mean.copy_(torch.randn(C, generator=g, dtype=torch.float64))
            oracle.running_var.copy_(torch.rand(C, generator=g, dtype=torch.float64) + 0.5)
    ours = bt.BatchNorm1d(C, **kw)
    ours.load_state_dict(oracle.state_dict())
    ours.train(training)
    oracle.train(training)
    x = (2 * torch.randn(shape, generator=g, dtype=torch.float64) + 1).requires_grad_(True)
    return ours, oracle, x


def grads_of(module, x):
    """x.grad, weight.grad, bias.grad (None where absent)."""
    return [t if t is None else t.grad for t in (x, module.weight, module.bias)]


def clear_grads(module, x):
    x.grad = None
    module.zero_grad(set_to_none=True)


# ---- backward through a retained graph -------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_second_backward_with_retain_graph_accumulates(shape, affine, training):
    ours, oracle, x = make_pair(shape, affine=affine, training=training)
    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = {}
    for name, m in (("ours", ours), ("torch", oracle)):
        clear_grads(m, x)
        y = m(x)
        y.backward(g, retain_graph=True)
        once = [t if t is None else t.clone() for t in grads_of(m, x)]
        y.backward(g)
        twice = grads_of(m, x)
        results[name] = once, twice
    once, twice = results["ours"]
    for i, (a, b) in enumerate(zip(once, twice)):
        if i == 0 or affine:  # the input's gradient; weight's and bias's with affine
            assert torch.equal(b, 2 * a)  # the same gradient, added twice
        else:
            assert a is None and b is None
    for a, b in zip(results["ours"][1], results["torch"][1]):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_autograd_grad_twice_with_retain_graph(training):
    ours, oracle, x = make_pair((7, 2, 3), training=training, seed=2)
    g = torch.randn(7, 2, 3, dtype=torch.float64)
    expected = torch.autograd.grad(oracle(x), (x, oracle.weight, oracle.bias), g)
    y = ours(x)
    inputs = (x, ours.weight, ours.bias)
    first = torch.autograd.grad(y, inputs, g, retain_graph=True)
    second = torch.autograd.grad(y, inputs, g, retain_graph=True)
    third = torch.autograd.grad(y, inputs, g)
    for a, b, c, e in zip(first, second, third, expected):
        assert torch.equal(a, b) and torch.equal(a, c)
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_second_backward_without_retain_graph_is_torchs_error():
    errors = {}
    for name in ("ours", "torch"):
        ours, oracle, x = make_pair((4, 3))
        y = (ours if name == "ours" else oracle)(x)
        y.sum().backward()
        with pytest.raises(Exception) as e:
            y.sum().backward()
        errors[name] = e.value
        with pytest.raises(Exception) as e2:
            torch.autograd.grad(y.sum(), x)
        assert type(e2.value) is type(e.value)
    assert type(errors["ours"]) is type(errors["torch"]) is RuntimeError
    assert "backward through the graph a second time" in str(errors["ours"])
    assert str(errors["ours"]) == str(errors["torch"])


def test_weight_modified_in_place_before_backward_is_torchs_error():
    for name in ("ours", "torch"):
        ours, oracle, x = make_pair((4, 3))
        m = ours if name == "ours" else oracle
        y = m(x)
        with torch.no_grad():
            m.weight.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


# ---- what the graph keeps ---------------------------------------------------------------------

def test_a_step_creates_no_bn1d_module():
    """The adapter runs bn1d's functional steps: no transient bn1d.BatchNorm1d per call, and the
    graph saves only tensors (the input, parameters and the normalization)."""
    ours, _, x = make_pair((5, 3))
    known = {id(o) for o in gc.get_objects() if type(o) is bn1d.BatchNorm1d}
    y = ours(x)
    # type(), not isinstance(): that reads __class__ of every object, and some torch objects warn.
    assert not [o for o in gc.get_objects() if type(o) is bn1d.BatchNorm1d and id(o) not in known]
    saved = y.grad_fn.saved_tensors
    assert all(isinstance(t, torch.Tensor) for t in saved if t is not None)
    y.sum().backward()


def run_with_hooks(m, x, how):
    """The loss of m on x, computed under saved-tensor hooks that keep the saved tensors'
    memory: ones that detach, ones that copy, torch's save_on_cpu, non-reentrant checkpointing."""
    if how == "clone":
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
            return m(x).pow(2).sum()
    if how == "detach":
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: t):
            return m(x).pow(2).sum()
    if how == "save_on_cpu":
        with torch.autograd.graph.save_on_cpu():
            return m(x).pow(2).sum()
    # The forward runs again in backward: in training the statistics are updated twice, as
    # with torch's module.
    return torch.utils.checkpoint.checkpoint(lambda z: m(z).pow(2).sum(), x,
                                             use_reentrant=False)


@pytest.mark.parametrize("how", ["detach", "clone", "save_on_cpu", "checkpoint"])
def test_saved_tensor_hooks(how):
    ours, oracle, x = make_pair((5, 3))
    got = torch.autograd.grad(run_with_hooks(ours, x, how), (x, ours.weight))
    expected = torch.autograd.grad(run_with_hooks(oracle, x, how), (x, oracle.weight))
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(oracle, name), rtol=1e-12,
                                   atol=0)


# ---- gradcheck -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(shape, affine, track, training):
    """With respect to the input, weight and bias. gradcheck perturbs the parameters in place,
    so the module reads the perturbed values; in training with tracked statistics each call
    updates the running statistics, which training outputs do not depend on."""
    ours, _, x = make_pair(shape, affine=affine, track=track, training=training, seed=3)
    inputs = (x, ours.weight, ours.bias) if affine else (x,)
    before = ours(x.detach()).detach()
    assert torch.autograd.gradcheck(lambda x, *params: ours(x), inputs)
    torch.testing.assert_close(ours(x.detach()), before, rtol=1e-12, atol=1e-12)


def test_gradcheck_momentum_none_and_uneven_batch():
    ours, _, x = make_pair((3, 2, 5), momentum=None, seed=4)
    assert torch.autograd.gradcheck(lambda x, w, b: ours(x), (x, ours.weight, ours.bias))
    assert int(ours.num_batches_tracked) > 1


# ---- a second derivative is refused ----------------------------------------------------------

def test_create_graph_gives_first_order_values():
    ours, oracle, x = make_pair((6, 3), seed=5)
    g = torch.randn(6, 3, dtype=torch.float64)
    plain = torch.autograd.grad(ours(x), (x, ours.weight, ours.bias), g)
    graph = torch.autograd.grad(ours(x), (x, ours.weight, ours.bias), g, create_graph=True)
    expected = torch.autograd.grad(oracle(x), (x, oracle.weight, oracle.bias), g,
                                   create_graph=True)
    for a, b, e in zip(plain, graph, expected):
        assert torch.equal(a, b)
        assert b.requires_grad == e.requires_grad is True  # as torch: part of a graph


@pytest.mark.parametrize("wrt", ["input", "weight", "grad_output"])
def test_double_backward_raises(wrt):
    ours, _, x = make_pair((6, 3), seed=6)
    if wrt != "input":
        x.requires_grad_(False)
    g = torch.randn(6, 3, dtype=torch.float64, requires_grad=(wrt == "grad_output"))
    source = {"input": x, "weight": ours.weight, "grad_output": g}[wrt]
    first = torch.autograd.grad(ours(x), ours.weight, g, create_graph=True)[0]
    # A loss that also depends on source directly: a silent constant would give a wrong value.
    loss = first.pow(2).sum() + source.sum()
    with pytest.raises(NotImplementedError, match="no second derivative") as e:
        torch.autograd.grad(loss, source)
    assert isinstance(e.value, RuntimeError)


def test_gradgradcheck_raises():
    ours, _, x = make_pair((5, 2), seed=7)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.gradgradcheck(lambda x, w, b: ours(x), (x, ours.weight, ours.bias))


def test_double_backward_raises_without_affine():
    ours, _, x = make_pair((5, 3, 2), affine=False, seed=8)
    first = torch.autograd.grad(ours(x).pow(3).sum(), x, create_graph=True)[0]
    assert first.requires_grad
    with pytest.raises(NotImplementedError, match="no second derivative"):
        torch.autograd.grad(first.sum(), x)
