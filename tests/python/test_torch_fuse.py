# SPDX-License-Identifier: MIT
"""bn1d.torch.convert(model, fuse_activations=True) and revert(model): BatchNorm1d + ReLU /
LeakyReLU pairs of an nn.Sequential become one fused bn1d.torch.BatchNorm1d and a FusedAway
placeholder, and back. The oracle is the original torch model (float64)."""

import copy

import pytest
import torch

import bn1d.torch as bt


def make_model(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.LeakyReLU(0.2)).double()
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 1.5)
    return model


def run(model, x, dy):
    """(output, grad_input, parameter gradients by name) of one forward/backward."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y = model(x)
    y.backward(dy)
    return y.detach(), x.grad, {n: p.grad for n, p in model.named_parameters()}


def assert_same_run(a, b, tol=1e-12):
    torch.testing.assert_close(a[0], b[0], rtol=tol, atol=tol)
    torch.testing.assert_close(a[1], b[1], rtol=tol, atol=tol)
    assert a[2].keys() == b[2].keys()
    for name in a[2]:
        torch.testing.assert_close(a[2][name], b[2][name], rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("training", [True, False])
def test_fused_model_matches_the_original(training):
    original = make_model().train(training)
    fused = bt.convert(copy.deepcopy(original), fuse_activations=True)
    assert type(fused[1]) is bt.BatchNorm1d and fused[1].activation == "relu"
    assert type(fused[4]) is bt.BatchNorm1d
    assert (fused[4].activation, fused[4].negative_slope) == ("leaky_relu", 0.2)
    assert type(fused[2]) is bt.FusedAway and type(fused[5]) is bt.FusedAway
    assert isinstance(fused[2], torch.nn.Identity)
    assert list(fused.state_dict()) == list(original.state_dict())
    assert [n for n, _ in fused.named_modules()] == [n for n, _ in original.named_modules()]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    dy = torch.randn(16, 3, generator=g, dtype=torch.float64)
    for _ in range(2):  # the second step sees the first one's running statistics
        assert_same_run(run(fused, x, dy), run(original, x, dy))
    for key, value in original.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[key], value, rtol=1e-12, atol=1e-12)


def test_revert_gives_back_torch_modules():
    original = make_model()
    relu, leaky = original[2], original[5]
    fused = bt.convert(copy.deepcopy(original), fuse_activations=True)
    x = torch.randn(8, 5, dtype=torch.float64)
    fused(x)
    state = copy.deepcopy(fused.state_dict())
    placeholder = fused[5]
    reverted = bt.revert(fused)
    assert reverted is fused
    assert [type(m) for m in reverted] == [type(m) for m in original]
    assert reverted[5] is placeholder.original and reverted[5].negative_slope == 0.2
    assert type(reverted[2]) is type(relu) and type(reverted[5]) is type(leaky)
    assert reverted.state_dict().keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(reverted.state_dict()[key], value), key
    reverted.eval()
    reference = copy.deepcopy(reverted)  # torch modules only: the oracle
    torch.testing.assert_close(reverted(x), reference(x), rtol=0, atol=0)


def test_fusing_shares_the_parameters_and_keeps_inplace_relu_and_nested_sequentials():
    inner = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.ReLU(inplace=True))
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), inner)
    weight = inner[0].weight
    bt.convert(model, fuse_activations=True)
    assert type(inner[0]) is bt.BatchNorm1d and inner[0].activation == "relu"
    assert inner[0].weight is weight
    x = torch.randn(6, 2)
    y = model(x)
    expected = torch.relu(torch.nn.functional.batch_norm(model[0](x), None, None, weight,
                                                         inner[0].bias, True))
    torch.testing.assert_close(y, expected)


def test_already_converted_batch_norm_is_fused():
    model = bt.convert(torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.ReLU()))
    assert model[0].activation is None
    bt.convert(model, fuse_activations=True)
    assert model[0].activation == "relu" and type(model[1]) is bt.FusedAway


class _NotSequential(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(3)
        self.act = torch.nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(x))


def test_pairs_that_cannot_be_fused_are_left_unfused():
    shared = torch.nn.BatchNorm1d(3)
    model = torch.nn.Sequential(
        torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.0), torch.nn.ReLU(),  # not directly after
        _NotSequential(),  # not in an nn.Sequential
        shared, torch.nn.ReLU(), shared,  # used at two places
        torch.nn.Unflatten(1, (3, 1)), torch.nn.BatchNorm2d(3), torch.nn.ReLU())
    hooked = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.ReLU())
    hooked[1].register_forward_hook(lambda m, i, o: None)
    bt.convert(model, fuse_activations=True)
    bt.convert(hooked, fuse_activations=True)
    assert not any(isinstance(m, bt.FusedAway) for m in model.modules())
    assert not any(isinstance(m, bt.FusedAway) for m in hooked.modules())
    assert type(model[0]) is bt.BatchNorm1d and model[0].activation is None  # plain convert
    assert model[3].bn.activation is None and type(model[3].act) is torch.nn.ReLU
    assert model[4].activation is None and model[4] is model[6]
    assert type(model[8]) is torch.nn.BatchNorm2d and type(model[9]) is torch.nn.ReLU


def test_convert_without_fusing_leaves_activations():
    model = bt.convert(make_model())
    assert type(model[2]) is torch.nn.ReLU and model[1].activation is None


def test_revert_refuses_a_fused_module_without_its_placeholder():
    model = torch.nn.Sequential(bt.BatchNorm1d(3), torch.nn.Linear(3, 3),
                                bt.BatchNorm1d(3, activation="relu"))
    with pytest.raises(ValueError, match=r"model: 2 has activation='relu'"):
        bt.revert(model)
    assert type(model[0]) is bt.BatchNorm1d  # nothing changed
    with pytest.raises(ValueError, match="model has activation='relu'"):
        bt.revert(bt.BatchNorm1d(3, activation="relu"))


def test_fuse_activations_must_be_a_bool():
    with pytest.raises(TypeError, match="fuse_activations: expected a bool, got int"):
        bt.convert(make_model(), fuse_activations=1)


def test_fold_keeps_the_fused_activation():
    """A Linear -> fused BatchNorm1d pair folds into the Linear followed by the activation; a
    fused BatchNorm1d before a Linear is left (act(bn(x)) is not affine)."""
    original = make_model().eval()
    fused = bt.convert(copy.deepcopy(original), fuse_activations=True)
    x = torch.randn(10, 5, dtype=torch.float64)
    folded, report = bt.fold(fused, x)
    assert type(folded[1]) is torch.nn.ReLU
    assert type(folded[4]) is torch.nn.LeakyReLU and folded[4].negative_slope == 0.2
    assert len(report.folded) == 2
    torch.testing.assert_close(folded(x), original(x), rtol=1e-12, atol=1e-12)
    after = torch.nn.Sequential(bt.BatchNorm1d(5, activation="relu", dtype=torch.float64),
                                torch.nn.Linear(5, 2).double()).eval()
    folded, report = bt.fold(after, x)
    assert not report.folded and "fused activation" in report.left[0].reason
