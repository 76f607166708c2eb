# SPDX-License-Identifier: MIT
"""bn1d.fold_into_preceding / fold_into_following: the folded layer against the unfolded torch
1.13 model (Linear -> BatchNorm1d, Conv1d -> BatchNorm1d on (N, C, L), BatchNorm1d -> Linear) in
eval mode, on random models, and the errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bn1d


def random_torch_bn(C, affine=True, momentum=0.1, eps=1e-5, seed=0):
    """An eval-mode float64 torch BatchNorm1d whose running statistics come from training
    batches (momentum None: their cumulative average) and whose gamma and beta are random."""
    g = torch.Generator().manual_seed(seed)
    bn = torch.nn.BatchNorm1d(C, eps=eps, momentum=momentum, affine=affine).double()
    for _ in range(3):
        bn(torch.randn(16, C, generator=g, dtype=torch.float64) * 3 + 2)
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.randn(C, generator=g, dtype=torch.float64))
            bn.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
    return bn.eval()


def bn1d_like(tbn, dtype="float64"):
    """The bn1d module with the torch module's options and state, in eval mode."""
    bn = bn1d.BatchNorm1d(tbn.num_features, eps=tbn.eps, momentum=tbn.momentum,
                          affine=tbn.affine, dtype=dtype)
    bn.load_state_dict(tbn.state_dict())
    return bn.eval()


def assert_float64_close(got, want):
    """float64: the folded output within 1e-12 of the unfolded one, relative to its largest
    magnitude."""
    got, want = np.asarray(got), want.detach().numpy()
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()


def t(a):
    return torch.from_numpy(np.asarray(a))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_linear_then_bn_float64(affine, momentum):
    torch.manual_seed(1)
    lin = torch.nn.Linear(6, 5).double()
    tbn = random_torch_bn(5, affine, momentum, seed=2)
    x = torch.randn(32, 6, dtype=torch.float64)
    want = tbn(lin(x))
    w, b = bn1d.fold_into_preceding(bn1d_like(tbn), lin.weight, lin.bias)
    assert isinstance(w, np.ndarray) and w.dtype == np.float64 and w.shape == (5, 6)
    assert w.flags.c_contiguous and b.shape == (5,)
    assert_float64_close(F.linear(x, t(w), t(b)), want)


def test_linear_without_bias_then_bn_float32_module():
    """A float32 bn1d module folded into a float64 Linear without bias: b' = -gamma mu / sigma +
    beta, computed from the module's float32 values."""
    torch.manual_seed(3)
    lin = torch.nn.Linear(4, 3, bias=False).double()
    tbn = random_torch_bn(3, seed=4).float()
    x = torch.randn(10, 4, dtype=torch.float64)
    w, b = bn1d.fold_into_preceding(bn1d_like(tbn, "float32"), lin.weight.detach().numpy())
    assert w.dtype == np.float64 and b.dtype == np.float64
    assert_float64_close(F.linear(x, t(w), t(b)), float32_model_in_float64(tbn)(lin(x)))


@pytest.mark.parametrize("affine", [True, False])
def test_conv1d_then_bn_on_ncl_float64(affine):
    torch.manual_seed(5)
    conv = torch.nn.Conv1d(3, 4, kernel_size=3, padding=1).double()
    tbn = random_torch_bn(4, affine, seed=6, eps=1e-3)
    x = torch.randn(8, 3, 11, dtype=torch.float64)
    w, b = bn1d.fold_into_preceding(bn1d_like(tbn), conv.weight, conv.bias)
    assert w.shape == (4, 3, 3)
    assert_float64_close(F.conv1d(x, t(w), t(b), padding=1), tbn(conv(x)))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_bn_then_linear_float64(affine, momentum):
    torch.manual_seed(7)
    tbn = random_torch_bn(6, affine, momentum, seed=8)
    lin = torch.nn.Linear(6, 3).double()
    x = torch.randn(32, 6, dtype=torch.float64) * 3 + 2
    # a column-major weight: any strides are read
    weight = lin.weight.detach().t().contiguous().t()
    w, b = bn1d.fold_into_following(bn1d_like(tbn), weight, lin.bias)
    assert w.shape == (3, 6) and w.flags.c_contiguous
    assert_float64_close(F.linear(x, t(w), t(b)), lin(tbn(x)))


def assert_within_one_rounding(w32, b32, x, want, conv_padding=None):
    """float32: W' and b' are the exact folded values each rounded once to float32,
    W'_ij = c_ij (1 + d_ij), b'_i = c_i (1 + e_i) with |d|, |e| <= u = 2^-24. Evaluated exactly
    (in float64), the folded layer then differs from the exact unfolded one by
    sum_j c_ij d_ij x_j + c_i e_i, with |c| <= |rounded| / (1 - u) at most
    u / (1 - u) (sum_j |W'_ij x_j| + |b'_i|): the bound checked per output, plus 1e-12 of that
    sum for the float64 evaluation of both sides."""
    w64, b64 = t(w32).double(), t(b32).double()
    if conv_padding is None:
        got, size = F.linear(x, w64), F.linear(x.abs(), w64.abs())
    else:
        got = F.conv1d(x, w64, padding=conv_padding)
        size = F.conv1d(x.abs(), w64.abs(), padding=conv_padding)
        b64 = b64[:, None]
    got, size = got + b64, size + b64.abs()
    u = 2.0 ** -24
    bound = (u / (1 - u) + 1e-12) * size
    assert ((got - want).abs() <= bound).all()


def assert_each_rounded_once(w32, b32, model, in_features):
    """Element by element: the exact folded weights and bias are read off the unfolded
    float64 model (torch) at the inputs 0 and e_1 ... e_in, b = model(0) and
    W[:, j] = model(e_j) - model(0), and each result (float32 or float16) must be that value
    rounded once to nearest: within half its dtype's spacing at the result, plus 1e-12 of the
    outputs for torch's float64 evaluation."""
    basis = torch.cat([torch.zeros(1, in_features, dtype=torch.float64),
                       torch.eye(in_features, dtype=torch.float64)])
    out = model(basis).detach().numpy()
    b_exact, w_exact = out[0], (out[1:] - out[0]).T
    w_slack = 1e-12 * (np.abs(out[1:]) + np.abs(out[0])).T
    for got, exact, slack in ((w32, w_exact, w_slack), (b32, b_exact, 1e-12 * np.abs(b_exact))):
        half_spacing = np.spacing(np.abs(got)).astype(np.float64) / 2
        assert (np.abs(got.astype(np.float64) - exact) <= half_spacing + slack).all()


def float32_model_in_float64(*modules):
    """The float32 modules in sequence, their parameters and buffers exactly, in float64."""
    return torch.nn.Sequential(*modules).float().double().eval()


def test_float32_linear_then_bn_within_one_rounding():
    torch.manual_seed(9)
    lin = torch.nn.Linear(7, 5)
    tbn = random_torch_bn(5, seed=10).float()
    x = torch.randn(64, 7, dtype=torch.float64)
    w, b = bn1d.fold_into_preceding(bn1d_like(tbn, "float32"), lin.weight, lin.bias)
    assert w.dtype == np.float32 and b.dtype == np.float32
    model = float32_model_in_float64(lin, tbn)
    assert_within_one_rounding(w, b, x, model(x))
    assert_each_rounded_once(w, b, model, 7)


def test_float32_conv1d_then_bn_within_one_rounding():
    torch.manual_seed(11)
    conv = torch.nn.Conv1d(3, 4, kernel_size=5, padding=2)
    tbn = random_torch_bn(4, seed=12).float()
    x = torch.randn(4, 3, 9, dtype=torch.float64)
    w, b = bn1d.fold_into_preceding(bn1d_like(tbn, "float32"), conv.weight, conv.bias)
    want = float32_model_in_float64(conv, tbn)(x)
    assert_within_one_rounding(w, b, x, want, conv_padding=2)


def test_float32_bn_then_linear_within_one_rounding():
    torch.manual_seed(13)
    tbn = random_torch_bn(8, affine=False, seed=14).float()
    lin = torch.nn.Linear(8, 3)
    x = torch.randn(64, 8, dtype=torch.float64)
    w, b = bn1d.fold_into_following(bn1d_like(tbn, "float32"), lin.weight, lin.bias)
    model = float32_model_in_float64(tbn, lin)
    assert_within_one_rounding(w, b, x, model(x))
    assert_each_rounded_once(w, b, model, 8)


def test_float16_bn_then_linear_each_rounded_once():
    torch.manual_seed(16)
    tbn = random_torch_bn(5, seed=17).half().float()  # state exact in float16
    lin = torch.nn.Linear(5, 4).half()
    w, b = bn1d.fold_into_following(bn1d_like(tbn, "float32"), lin.weight, lin.bias)
    assert w.dtype == np.float16 and b.dtype == np.float16
    assert_each_rounded_once(w, b, float32_model_in_float64(tbn, lin), 5)


def test_errors_name_the_problem_and_change_nothing():
    tbn = random_torch_bn(4, seed=15)
    bn = bn1d_like(tbn)
    before = bn.state_dict()
    w = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"weight: expected a Linear weight \[4, in\]"):
        bn1d.fold_into_preceding(bn, w)
    with pytest.raises(ValueError, match=r"weight: expected a Linear weight \[out, 4\].*\[4, 3\]"):
        bn1d.fold_into_following(bn, w.T.copy())
    with pytest.raises(ValueError, match="Conv1d after a BatchNorm1d cannot be folded"):
        bn1d.fold_into_following(bn, np.ones((3, 4, 1)))
    with pytest.raises(ValueError, match=r"bias: expected shape \[3\]"):
        bn1d.fold_into_following(bn, w, np.zeros(4))
    with pytest.raises(ValueError, match="bias: expected the weight's dtype float64, got float32"):
        bn1d.fold_into_following(bn, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="weight"):
        bn1d.fold_into_following(bn, w.astype(np.int64))
    bn.running_var[1] = -1.0
    with pytest.raises(ValueError, match=r"running_var\[1\] = -1.0"):
        bn1d.fold_into_following(bn, w)
    bn.running_var[1] = before["running_var"][1]
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_training_mode_and_missing_running_stats_are_errors():
    with pytest.raises(ValueError, match="eval-mode BatchNorm1d.*training mode"):
        bn1d.fold_into_preceding(bn1d.BatchNorm1d(2), np.ones((2, 3), np.float32))
    no_stats = bn1d.BatchNorm1d(2, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="track_running_stats.*cannot be folded"):
        bn1d.fold_into_following(no_stats, np.ones((3, 2), np.float32))


def test_argument_types():
    w = np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match="bn: expected a bn1d.BatchNorm1d, got "
                                        "torch.nn.modules.batchnorm.BatchNorm1d"):
        bn1d.fold_into_preceding(torch.nn.BatchNorm1d(2).eval(), w)
    with pytest.raises(TypeError, match="bn: expected a bn1d.BatchNorm1d, got "
                                        "bn1d.GhostBatchNorm1d"):
        bn1d.fold_into_preceding(bn1d.GhostBatchNorm1d(2).eval(), w)
    bn = bn1d.BatchNorm1d(2).eval()
    with pytest.raises(TypeError, match="weight: expected a numpy array or a tensor, got str"):
        bn1d.fold_into_preceding(bn, "w")
    with pytest.raises(TypeError, match="bias: expected a numpy array or a tensor, got dict"):
        bn1d.fold_into_following(bn, w, {})
