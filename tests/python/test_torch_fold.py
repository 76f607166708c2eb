# SPDX-License-Identifier: MIT
"""bn1d.torch.fold: the folded eval copy against the unfolded one (torch 1.13's eval output is
the oracle) on trained random models, and each hazard it must leave in place with a reason.

float64: within 1e-12 of the largest output magnitude. float32: per output element within
(2 K + 10) u S, u = 2^-24, K the layer's dot-product length, S the float64 sum of the magnitudes
of every term of the unfolded computation (|s| (|W| |x| + |b| + |mean|) + |beta| for a layer
then the batch norm, s = gamma / sqrt(var + eps)). Each folded weight and bias is rounded once
(u S at most together); both models' float32 evaluations round each dot product K + 1 times and
the batch norm about 4 times more (first order: (2 K + 9) u S), hence the bound.
"""

import pytest
import torch
import torch.nn.functional as F

import bn1d.torch as bt

U32 = 2.0 ** -24


def trained(model, x, steps=3, seed=0):
    """model after a few SGD steps in training mode on shifted, scaled batches like x (so the
    running statistics and parameters are not their initial values), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        batch = torch.randn(x.shape, generator=g, dtype=x.dtype) * 3 + 2
        opt.zero_grad()
        model(batch).square().mean().backward()
        opt.step()
    return model.eval()


def batch_norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]


def assert_float64_close(got, want):
    assert got.dtype == want.dtype == torch.float64
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(),
                               torch.nn.Linear(5, 3)), (32, 6), 1


def conv():
    return torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3, padding=1), torch.nn.BatchNorm1d(4),
                               torch.nn.ReLU()), (8, 3, 10), 1


def bn_linear():
    return torch.nn.Sequential(torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3)), (32, 6), 1


def nested():
    inner = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False),
                                torch.nn.BatchNorm1d(5, affine=False))
    tail = torch.nn.Sequential(torch.nn.BatchNorm1d(5, momentum=None), torch.nn.Linear(5, 2))
    return torch.nn.Sequential(inner, torch.nn.ReLU(), tail), (32, 6), 2


def bn1d_module():
    return torch.nn.Sequential(torch.nn.Linear(6, 5), bt.BatchNorm1d(5, momentum=None)), \
        (32, 6), 1


def linear_bn_linear():
    # The batch norm folds once, into the Linear before it.
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5),
                               torch.nn.Linear(5, 3)), (32, 6), 1


def bn_linear_bn():
    # Both batch norms fold into the one Linear, one after the other.
    return torch.nn.Sequential(torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 4, bias=False),
                               torch.nn.BatchNorm1d(4)), (32, 6), 2


@pytest.mark.parametrize("make", [mlp, conv, bn_linear, nested, bn1d_module, linear_bn_linear,
                                  bn_linear_bn])
def test_random_models_float64(make):
    torch.manual_seed(3)
    model, shape, n_folded = make()
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    model = trained(model.double(), x)
    want = model(x)
    folded, report = bt.fold(model, x)
    assert len(report.folded) == n_folded and report.left == []
    assert batch_norms(folded) == [] and not folded.training
    with torch.no_grad():
        assert_float64_close(folded(x), want)
    for p in folded.parameters():
        assert isinstance(p, torch.nn.Parameter) and p.dtype == torch.float64


def magnitude_bound(layer, bn, x, bn_first):
    """(2 K + 10) u S per output element (see the module docstring), in float64."""
    d = {k: v.detach().double() for k, v in bn.state_dict().items()}
    s = (d["weight"] if bn.affine else 1.0) / torch.sqrt(d["running_var"] + bn.eps)
    beta = d["bias"].abs() if bn.affine else 0.0
    w, b = layer.weight.detach().double().abs(), layer.bias.detach().double().abs()
    x = x.double().abs()
    if bn_first:
        z = s.abs() * (x + d["running_mean"].abs()) + beta
        terms, k = F.linear(z, w) + b, layer.in_features
    elif isinstance(layer, torch.nn.Conv1d):
        y = F.conv1d(x, w, padding=layer.padding) + b[:, None]
        terms = s.abs()[:, None] * (y + d["running_mean"].abs()[:, None]) + \
            (beta[:, None] if bn.affine else 0.0)
        k = layer.in_channels * layer.kernel_size[0]
    else:
        y = F.linear(x, w) + b
        terms, k = s.abs() * (y + d["running_mean"].abs()) + beta, layer.in_features
    return (2 * k + 10) * U32 * terms


@pytest.mark.parametrize("make", [
    lambda: (torch.nn.Sequential(torch.nn.Linear(40, 7), torch.nn.BatchNorm1d(7)), (64, 40)),
    lambda: (torch.nn.Sequential(torch.nn.Conv1d(5, 6, 3, padding=1),
                                 torch.nn.BatchNorm1d(6, affine=False)), (8, 5, 20)),
    lambda: (torch.nn.Sequential(torch.nn.BatchNorm1d(30, momentum=None),
                                 torch.nn.Linear(30, 4)), (64, 30)),
])
def test_single_pairs_float32_within_derived_bound(make):
    torch.manual_seed(4)
    model, shape = make()
    x = torch.randn(shape) * 2 + 1
    model = trained(model, x)
    with torch.no_grad():
        want = model(x)
    folded, report = bt.fold(model, x)
    assert len(report.folded) == 1
    with torch.no_grad():
        got = folded(x)
    assert got.dtype == torch.float32
    bn_first = isinstance(model[0], torch.nn.BatchNorm1d)
    layer, bn = (model[1], model[0]) if bn_first else (model[0], model[1])
    bound = magnitude_bound(layer, bn, x, bn_first)
    assert ((got.double() - want.double()).abs() <= bound).all()
    assert (got != want).any()  # the comparison is not vacuous: the roundings differ


def test_no_running_statistics_left_with_reason():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5),
                                torch.nn.BatchNorm1d(5, track_running_stats=False))
    x = torch.randn(16, 6)
    folded, report = bt.fold(model, x)
    assert report.folded == []
    assert [(e.names, e.reason) for e in report.left] == [
        (("0", "1"), "no running statistics, cannot fold (pytorch#71259)")]
    assert type(folded[1]) is torch.nn.BatchNorm1d
    assert torch.equal(folded[0].weight, model[0].weight)


def test_linear_acting_on_length_is_left_and_output_unchanged():
    # (N, C, L) = (8, 5, 7): the Linear acts on L = 7 while the batch norm normalizes C = 5.
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(7, 7), torch.nn.BatchNorm1d(5)).double()
    x = torch.randn(8, 5, 7, dtype=torch.float64)
    model = trained(model, x)
    want = model(x)
    folded, report = bt.fold(model, x)
    assert report.folded == [] and len(report.left) == 1
    assert "pytorch/ao#4116" in report.left[0].reason and "(8, 5, 7)" in report.left[0].reason
    with torch.no_grad():
        assert torch.equal(folded(x), want)


def test_bn_then_linear_on_3d_is_left():
    torch.manual_seed(6)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(5), torch.nn.Linear(7, 3)).double()
    x = torch.randn(8, 5, 7, dtype=torch.float64)
    model = trained(model, x)
    want = model(x)
    folded, report = bt.fold(model, x)
    assert report.folded == []
    assert report.left[0].names == ("0", "1") and "(N, C)" in report.left[0].reason
    with torch.no_grad():
        assert torch.equal(folded(x), want)


def test_unbatched_conv_and_bn_then_conv_are_left():
    model = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3), torch.nn.BatchNorm1d(8),
                                torch.nn.Unflatten(0, (1, 4)), torch.nn.BatchNorm1d(4),
                                torch.nn.Conv1d(4, 2, 3, padding=1))
    folded, report = bt.fold(model, torch.randn(3, 10))  # unbatched (C, L): Conv1d gives (4, 8)
    assert report.folded == []
    assert [(e.names, e.reason) for e in report.left] == [
        (("0", "1"), "the Conv1d output is (4, 8), not (N, C, L): BatchNorm1d does not "
                     "normalize its channels"),
        (("3", "4"), "a Conv1d after a batch norm cannot be folded: its zero padding is not "
                     "normalized")]


class Branches(torch.nn.Module):
    """Runs one of two Sequentials: the example reaches only the first."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4))
        self.b = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4))

    def forward(self, x, use_b=False):
        return self.b(x) if use_b else self.a(x)


def test_branch_not_run_by_the_example_is_left():
    model = trained(Branches().double(), torch.zeros(16, 6, dtype=torch.float64))
    x = torch.randn(16, 6, dtype=torch.float64)
    want = model(x)
    folded, report = bt.fold(model, x)
    assert [e.names for e in report.folded] == [("a.0", "a.1")]
    assert [(e.names, e.reason) for e in report.left] == [(("b.0", "b.1"),
                                                            "not run by the example")]
    assert type(folded.b[1]) is torch.nn.BatchNorm1d
    with torch.no_grad():
        assert_float64_close(folded(x), want)


def test_tuple_example_is_passed_as_arguments():
    model = trained(Branches().double(), torch.zeros(16, 6, dtype=torch.float64))
    x = torch.randn(16, 6, dtype=torch.float64)
    folded, report = bt.fold(model, (x, torch.tensor(True)))
    assert [e.names for e in report.folded] == [("b.0", "b.1")]
    with torch.no_grad():
        assert_float64_close(folded(x, True), model(x, True))


class AlsoOutside(torch.nn.Module):
    """Runs the Sequential's Linear a second time, outside it."""

    def __init__(self):
        super().__init__()
        self.seq = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.BatchNorm1d(5))

    def forward(self, x):
        return self.seq(x) + self.seq[0](x)


def test_module_run_outside_its_sequential_is_left():
    model = AlsoOutside()
    folded, report = bt.fold(model, torch.randn(8, 5))
    assert [(e.names, e.reason) for e in report.left] == [
        (("seq.0", "seq.1"), "a module of the pair is also run outside its nn.Sequential")]


def test_shared_module_is_left():
    lin = torch.nn.Linear(5, 5)
    model = torch.nn.Sequential(lin, torch.nn.BatchNorm1d(5), lin)
    folded, report = bt.fold(model, torch.randn(8, 5))
    assert report.folded == []
    assert "several places" in report.left[0].reason


class ScaledBatchNorm1d(torch.nn.BatchNorm1d):
    """A subclass whose forward is not torch's: fold must not fold it."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_subclass_and_hooked_modules_are_left():
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), ScaledBatchNorm1d(3),
                                torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)).double()
    model[2].register_forward_hook(lambda m, i, o: o + 1)
    x = torch.randn(8, 4, dtype=torch.float64)
    model = trained(model, x)
    want = model(x)
    folded, report = bt.fold(model, x)
    assert report.folded == []
    assert [e.reason for e in report.left] == [
        "a subclass of torch.nn.BatchNorm1d, whose forward may differ",
        "a subclass of torch.nn.BatchNorm1d, whose forward may differ",
        "a module of the pair has forward hooks (folding would change what they see)"]
    with torch.no_grad():
        assert torch.equal(folded(x), want)


def test_original_model_unchanged():
    model, shape, _ = nested()
    x = torch.randn(shape)
    model = trained(model, x).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, report = bt.fold(model, x)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(batch_norms(model)) == 2 and folded is not model


def test_bias_created_and_report_text():
    no_stats = torch.nn.BatchNorm1d(2, track_running_stats=False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), bt.BatchNorm1d(3),
                                torch.nn.Sequential(torch.nn.Linear(3, 2), no_stats))
    folded, report = bt.fold(model, torch.randn(8, 4))
    assert isinstance(folded[0].bias, torch.nn.Parameter) and folded[0].bias.shape == (3,)
    assert folded[0].bias.dtype == torch.float32 and model[0].bias is None
    assert type(folded[1]) is torch.nn.Identity
    assert str(report).splitlines() == [
        "folded 1 pair(s), left 1",
        "  folded: 0 (torch.nn.Linear), 1 (bn1d.torch.BatchNorm1d): folded",
        "  left:   2.0 (torch.nn.Linear), 2.1 (torch.nn.BatchNorm1d): no running statistics, "
        "cannot fold (pytorch#71259)"]


def test_feature_count_mismatch_is_an_error():
    # num_features set by hand: torch still runs the example (it uses the buffers' size).
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model[1].num_features = 4
    with pytest.raises(ValueError, match="0 has out_features=3 but 1 has num_features=4"):
        bt.fold(model, torch.randn(8, 4))


def test_negative_running_var_is_an_error_naming_the_modules():
    model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(4, 3),
                                                    torch.nn.BatchNorm1d(3)))
    with torch.no_grad():
        model[0][1].running_var[1] = -2.0
    with pytest.raises(ValueError, match="model: cannot fold 0.0 and 0.1: .*running_var"):
        bt.fold(model, torch.randn(8, 4))
    assert model[0][1].running_var[1] == -2.0 and model.training


def test_bad_arguments():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        bt.fold("model", torch.randn(2, 4))
    with pytest.raises(TypeError, match="example_input: expected a torch.Tensor"):
        bt.fold(model, [[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(TypeError, match="example_input: .* got tuple"):
        bt.fold(model, ())
    with pytest.raises(RuntimeError):  # the example run's own error: 5 features, not 4
        bt.fold(model, torch.randn(2, 5))
