# SPDX-License-Identifier: MIT
"""The fused activation (activation="relu" / "leaky_relu") of bn1d.BatchNorm1d,
bn1d.GhostBatchNorm1d, bn1d.functional and bn1d.torch.BatchNorm1d / SyncBatchNorm.

The oracle is torch 1.13 in float64 on the same values: torch.relu(F.batch_norm(...)) or
F.leaky_relu(F.batch_norm(...), slope) and autograd's gradients of that composition, including
the subgradient at bn(x) == 0 (0 for ReLU, slope * dy for LeakyReLU)."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import bn1d
import bn1d.functional as F
import bn1d.torch as bt

ACTIVATIONS = [("relu", 0.01), ("leaky_relu", 0.2), ("leaky_relu", -0.5)]
# Tolerance relative to the largest |exact| value, per dtype of the compared tensor.
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2 ** -7,
       torch.float16: 2 ** -9}


def act(y, activation, slope):
    return torch.relu(y) if activation == "relu" else TF.leaky_relu(y, slope)


def assert_close(got, exact, what):
    """got (any dtype) within TOL of its dtype of exact (float64)."""
    got = torch.as_tensor(np.asarray(got)) if not isinstance(got, torch.Tensor) else got
    scale = max(1.0, float(exact.abs().max())) if exact.numel() else 1.0
    tol = TOL[got.dtype] if got.dtype in TOL else TOL[torch.float32]
    diff = float((got.detach().double() - exact.detach()).abs().max()) if exact.numel() else 0.0
    assert diff <= tol * scale, f"{what}: max |diff| {diff} > {tol * scale}"


def oracle(x, weight, bias, running_mean, running_var, training, activation, slope, dy,
           momentum=0.1, eps=1e-5):
    """torch float64: (y, grad_input, grad_weight, grad_bias, running_mean, running_var) of
    act(batch_norm(x)) with grad_output dy; weight/bias None without affine."""
    x = x.detach().double().requires_grad_()
    w = None if weight is None else weight.detach().double().requires_grad_()
    b = None if bias is None else bias.detach().double().requires_grad_()
    rm = None if running_mean is None else running_mean.detach().double().clone()
    rv = None if running_var is None else running_var.detach().double().clone()
    y = act(TF.batch_norm(x, rm, rv, w, b, training, momentum, eps), activation, slope)
    y.backward(dy.detach().double())
    return (y.detach(), x.grad, None if w is None else w.grad, None if b is None else b.grad,
            rm, rv)


def make_input(shape, layout, dtype, seed):
    """A random input of shape (N, C) or (N, C, L); channels_last: x.transpose(1, 2) of an
    (N, L, C) tensor. Values centred so that both signs of bn(x) occur."""
    g = torch.Generator().manual_seed(seed)
    if layout == "channels_last":
        N, C, L = shape
        x = (2 * torch.randn(N, L, C, generator=g, dtype=torch.float64) + 1).transpose(1, 2)
        assert not x.is_contiguous()
    else:
        x = 2 * torch.randn(shape, generator=g, dtype=torch.float64) + 1
    return x.to(dtype)


# ---- bn1d.torch.BatchNorm1d against torch ------------------------------------------------------

# (module dtype, input dtype): pure and mixed precision.
CONFIGS = {"float64": (torch.float64, torch.float64), "float32": (torch.float32, torch.float32),
           "bfloat16": (torch.bfloat16, torch.bfloat16), "float16": (torch.float16, torch.float16),
           "mixed_bf16": (torch.float32, torch.bfloat16),
           "mixed_f16": (torch.float32, torch.float16)}
LAYOUTS = {"2d": (9, 4), "3d": (5, 4, 6), "channels_last": (5, 4, 6)}


def torch_module(C, dtype, affine, activation, slope, seed, cls=bt.BatchNorm1d, **kw):
    g = torch.Generator().manual_seed(seed + 100)
    m = cls(C, affine=affine, dtype=dtype, activation=activation, negative_slope=slope, **kw)
    with torch.no_grad():
        if affine:
            m.weight.copy_(torch.rand(C, generator=g, dtype=torch.float64) + 0.5)
            m.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64) * 0.5)
        m.running_mean.copy_(torch.randn(C, generator=g, dtype=torch.float64))
        m.running_var.copy_(torch.rand(C, generator=g, dtype=torch.float64) + 0.5)
    return m


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("activation,slope", ACTIVATIONS)
def test_torch_module_matches_torch(config, layout, training, affine, activation, slope):
    module_dtype, input_dtype = CONFIGS[config]
    shape = LAYOUTS[layout]
    m = torch_module(shape[1], module_dtype, affine, activation, slope, seed=1)
    m.train(training)
    before = (m.running_mean.clone(), m.running_var.clone())
    x = make_input(shape, layout, input_dtype, seed=2).requires_grad_()
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(3),
                     dtype=torch.float64).to(input_dtype)
    exact = oracle(x, m.weight, m.bias, *before, training, activation, slope, dy)
    y = m(x)
    y.backward(dy)
    assert y.dtype == input_dtype and x.grad.dtype == input_dtype
    assert_close(y, exact[0], "output")
    assert_close(x.grad, exact[1], "grad_input")
    if affine:
        assert m.weight.grad.dtype == module_dtype
        assert_close(m.weight.grad, exact[2], "grad_weight")
        assert_close(m.bias.grad, exact[3], "grad_bias")
    assert_close(m.running_mean, exact[4], "running_mean")
    assert_close(m.running_var, exact[5], "running_var")
    if activation == "relu":
        assert float(y.detach().double().min()) >= 0.0


def make_zero_case(activation):
    """Channels of values {-1, 0, 1} (equal counts: mean 0 exactly), weight 1, bias 0: bn(x) is
    exactly 0 where x is 0, the point where ReLU's subgradient is chosen."""
    values = torch.tensor([-1.0, 0.0, 1.0, 0.0, 1.0, -1.0], dtype=torch.float64)
    x = torch.stack([values, values.flip(0), values.roll(1)], dim=1)  # (6, 3)
    dy = torch.arange(1.0, 19.0, dtype=torch.float64).reshape(6, 3)  # integers: exact sums
    return x, dy


@pytest.mark.parametrize("activation,slope", [("relu", 0.01), ("leaky_relu", 0.25)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_zero_takes_torchs_subgradient(activation, slope, dtype):
    """At bn(x) == 0 exactly, torch's gradient is 0 (ReLU) or slope * dy (LeakyReLU): the
    gradient sums (grad_bias = sum of the gated dy, exact for integer dy and slope 1/4) are
    torch's exactly, and in eval mode grad_input at those positions is torch's."""
    x, dy = make_zero_case(activation)
    m = bt.BatchNorm1d(3, activation=activation, negative_slope=slope, dtype=dtype)
    xin = x.to(dtype).clone().requires_grad_()
    y = m(xin)
    y.backward(dy.to(dtype))
    exact = oracle(x, m.weight, m.bias, None, None, True, activation, slope, dy)
    zero = x == 0
    assert bool((y.detach()[zero] == 0).all())
    assert torch.equal(m.bias.grad.double(), exact[3])
    assert_close(xin.grad, exact[1], "grad_input")
    # eval: running mean 0, running var 1 - eps: z = x exactly, dx = invstd * act'(z) * dy.
    m.eval()
    with torch.no_grad():
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    xin = x.to(dtype).clone().requires_grad_()
    m(xin).backward(dy.to(dtype))
    exact = oracle(x, m.weight, m.bias, m.running_mean, m.running_var, False, activation, slope,
                   dy)
    if activation == "relu":
        assert torch.equal(xin.grad[zero], torch.zeros(int(zero.sum()), dtype=dtype))
        assert bool((exact[1][zero] == 0).all())
    else:
        assert bool((xin.grad[zero] != 0).all())
    assert_close(xin.grad, exact[1], "eval grad_input")


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("activation,slope", ACTIVATIONS)
def test_torch_module_masked_matches_torch_on_packed_values(use_mask, activation, slope):
    N, C, L = 4, 3, 7
    m = torch_module(C, torch.float64, True, activation, slope, seed=4)
    x = make_input((N, C, L), "3d", torch.float64, seed=5).requires_grad_()
    lengths = torch.tensor([7, 3, 0, 5])
    valid = torch.arange(L)[None, :] < lengths[:, None]
    kw = {"mask": valid} if use_mask else {"lengths": lengths}
    dy = torch.randn(N, C, L, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = oracle(x.permute(0, 2, 1)[valid], m.weight, m.bias, m.running_mean, m.running_var,
                   True, activation, slope, dy.permute(0, 2, 1)[valid])
    y = m(x, **kw)
    y.backward(dy)
    assert_close(y.permute(0, 2, 1)[valid], exact[0], "output")
    assert_close(x.grad.permute(0, 2, 1)[valid], exact[1], "grad_input")
    assert torch.equal(y.detach().permute(0, 2, 1)[~valid], torch.zeros(int((~valid).sum()), C,
                                                                          dtype=torch.float64))
    assert torch.equal(x.grad.permute(0, 2, 1)[~valid], torch.zeros(int((~valid).sum()), C,
                                                                      dtype=torch.float64))
    assert_close(m.weight.grad, exact[2], "grad_weight")
    assert_close(m.bias.grad, exact[3], "grad_bias")
    assert_close(m.running_var, exact[5], "running_var")


def test_torch_module_gradcheck_away_from_zero():
    m = bt.BatchNorm1d(3, activation="leaky_relu", negative_slope=0.3, dtype=torch.float64)
    x = make_input((6, 3, 2), "3d", torch.float64, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: m(x), (x, m.weight, m.bias))


def test_torch_module_options_repr_and_state():
    m = bt.BatchNorm1d(4, activation="leaky_relu", negative_slope=0.2)
    assert (m.activation, m.negative_slope) == ("leaky_relu", 0.2)
    assert repr(m) == ("BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, "
                       "track_running_stats=True, activation='leaky_relu', negative_slope=0.2)")
    assert "activation" not in repr(bt.BatchNorm1d(4))
    assert list(m.state_dict()) == list(torch.nn.BatchNorm1d(4).state_dict())
    plain = torch.nn.BatchNorm1d(4)
    m.load_state_dict(plain.state_dict())
    clone = copy.deepcopy(m)
    assert (clone.activation, clone.negative_slope) == ("leaky_relu", 0.2)
    back = pickle.loads(pickle.dumps(m))
    x = torch.randn(8, 4)
    torch.testing.assert_close(back(x), m(x), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"activation": "gelu"}, ValueError, r"activation: expected None, \"relu\" or \"leaky_relu\""
                                         r", got 'gelu'"),
    ({"activation": 1}, TypeError, "activation: .* got int"),
    ({"activation": "relu", "negative_slope": float("nan")}, ValueError, "negative_slope"),
    ({"activation": "leaky_relu", "negative_slope": float("inf")}, ValueError, "negative_slope"),
    ({"activation": "leaky_relu", "negative_slope": "0.1"}, TypeError, "negative_slope"),
])
@pytest.mark.parametrize("cls", [bt.BatchNorm1d, bt.SyncBatchNorm, bn1d.BatchNorm1d,
                                 bn1d.GhostBatchNorm1d])
def test_bad_activation_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(3, **kwargs)


def test_torch_module_runs_torchs_path_with_the_activation():
    """A module bn1d cannot run (its bias removed by hand) runs torch's forward, followed by
    the activation."""
    m = bt.BatchNorm1d(3, activation="relu", dtype=torch.float64)
    ref = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    m.bias = None
    ref.bias = None
    x = make_input((8, 3), "2d", torch.float64, seed=8)
    torch.testing.assert_close(m(x), torch.relu(ref(x)), rtol=1e-12, atol=1e-12)


def test_sync_batch_norm_without_process_group_fuses_the_activation():
    m = torch_module(4, torch.float64, True, "leaky_relu", 0.1, seed=9, cls=bt.SyncBatchNorm)
    x = make_input((7, 4, 3), "3d", torch.float64, seed=10).requires_grad_()
    dy = torch.randn(7, 4, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    exact = oracle(x, m.weight, m.bias, m.running_mean, m.running_var, True, "leaky_relu", 0.1,
                   dy)
    y = m(x)
    y.backward(dy)
    assert_close(y, exact[0], "output")
    assert_close(x.grad, exact[1], "grad_input")
    assert_close(m.weight.grad, exact[2], "grad_weight")
    assert "activation='leaky_relu', negative_slope=0.1" in repr(m)
    fused = bt.BatchNorm1d(4, activation="relu")
    converted = bt.convert_sync_batchnorm(torch.nn.Sequential(fused))
    assert (converted[0].activation, converted[0].negative_slope) == ("relu", 0.01)


# ---- bn1d.BatchNorm1d, bn1d.GhostBatchNorm1d (numpy) ------------------------------------------

@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("activation,slope", ACTIVATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_module_matches_torch(layout, training, activation, slope, dtype):
    shape = LAYOUTS[layout]
    tdtype = getattr(torch, dtype)
    ref = torch_module(shape[1], tdtype, True, None, 0.01, seed=12)
    m = bn1d.BatchNorm1d(shape[1], dtype=dtype, activation=activation, negative_slope=slope)
    m.load_state_dict(ref.state_dict())
    m.train(training)
    x = make_input(shape, layout, tdtype, seed=13)
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(14), dtype=tdtype)
    exact = oracle(x, ref.weight, ref.bias, ref.running_mean, ref.running_var, training,
                   activation, slope, dy)
    y = m(x.numpy())
    gx, gw, gb = m.backward(dy.numpy())
    assert y.dtype == np.dtype(dtype)
    assert_close(y, exact[0], "output")
    assert_close(gx, exact[1], "grad_input")
    assert_close(gw, exact[2], "grad_weight")
    assert_close(gb, exact[3], "grad_bias")
    assert_close(m.running_var, exact[5], "running_var")
    assert_close(m.infer(x.numpy()), act(TF.batch_norm(
        x.double(), torch.from_numpy(m.running_mean).double(),
        torch.from_numpy(m.running_var).double(), ref.weight.detach().double(),
        ref.bias.detach().double(), False), activation, slope), "infer")


def test_numpy_module_16bit_input_and_masked():
    m = bn1d.BatchNorm1d(3, activation="relu")
    x = make_input((4, 3, 5), "3d", torch.bfloat16, seed=15)
    lengths = np.array([5, 2, 4, 1])
    valid = torch.arange(5)[None, :] < torch.from_numpy(lengths)[:, None]
    y = torch.from_dlpack(m(x, lengths=lengths))
    exact = oracle(x.permute(0, 2, 1)[valid], torch.ones(3), torch.zeros(3), None, None, True,
                   "relu", 0.01, torch.zeros(int(valid.sum()), 3))
    assert y.dtype == torch.bfloat16
    assert_close(y.permute(0, 2, 1)[valid], exact[0], "output")
    assert bool((y.permute(0, 2, 1)[~valid] == 0).all())


def test_numpy_module_options_repr_pickle_and_files(tmp_path):
    m = bn1d.BatchNorm1d(3, activation="leaky_relu", negative_slope=0.3)
    assert (m.activation, m.negative_slope) == ("leaky_relu", 0.3)
    assert repr(m) == ("BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, "
                       "track_running_stats=True, activation='leaky_relu', negative_slope=0.3)")
    assert repr(bn1d.BatchNorm1d(3, activation="relu")).endswith("activation='relu')")
    assert bn1d.BatchNorm1d(3).activation is None
    with pytest.raises(AttributeError, match="activation: fixed at construction"):
        m.activation = "relu"
    with pytest.raises(AttributeError, match="negative_slope: fixed at construction"):
        m.negative_slope = 0.1
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    m(x)
    assert list(m.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                    "num_batches_tracked"]
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert repr(clone) == repr(m)
        np.testing.assert_array_equal(clone.infer(x), m.infer(x))
    m.eps = 1e-3  # set_options keeps the activation
    assert m.activation == "leaky_relu" and m.negative_slope == 0.3
    path = tmp_path / "bn.safetensors"
    m.save(path)
    plain = bn1d.BatchNorm1d(3)
    plain.load(path)  # activation is an option, not state: the file loads into any module
    np.testing.assert_array_equal(plain.running_mean, m.running_mean)
    fused = bn1d.BatchNorm1d(3, activation="relu", eps=1e-3)
    fused.load(path)
    plain.eps = 1e-3  # the fused pass rounds z once from float64: within 1 ulp of the plain
    np.testing.assert_allclose(fused.infer(x), np.maximum(plain.infer(x), 0), rtol=2.5e-7,
                               atol=1e-7)


def test_numpy_module_round_trips_through_torch():
    m = bn1d.BatchNorm1d(3, activation="leaky_relu", negative_slope=0.05)
    t = bt.to_torch(m)
    assert (t.activation, t.negative_slope) == ("leaky_relu", 0.05)
    back = bt.from_torch(t)
    assert (back.activation, back.negative_slope) == ("leaky_relu", 0.05)


def test_ghost_module_matches_torch_chunk_by_chunk():
    m = bn1d.GhostBatchNorm1d(3, virtual_batch_size=4, activation="relu", dtype="float64")
    assert "activation='relu'" in repr(m)
    x = make_input((10, 3), "2d", torch.float64, seed=16)
    dy = torch.randn(10, 3, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    y = m(x.numpy())
    gx, gw, gb = m.backward(dy.numpy())
    ys, gxs, gws = [], [], []
    for xc, dyc in zip(x.chunk(3), dy.chunk(3)):
        exact = oracle(xc, torch.ones(3), torch.zeros(3), None, None, True, "relu", 0.01, dyc)
        ys.append(exact[0])
        gxs.append(exact[1])
        gws.append(exact[2])
    assert_close(y, torch.cat(ys), "output")
    assert_close(gx, torch.cat(gxs), "grad_input")
    assert_close(gw, sum(gws), "grad_weight")


# ---- bn1d.functional ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("activation,slope", ACTIVATIONS)
def test_functional_batch_norm_matches_torch(layout, training, activation, slope):
    shape = LAYOUTS[layout]
    C = shape[1]
    x = make_input(shape, layout, torch.float32, seed=18)
    w, b = torch.rand(C) + 0.5, torch.randn(C)
    rm, rv = torch.randn(C), torch.rand(C) + 0.5
    exact = oracle(x, w, b, rm, rv, training, activation, slope, torch.zeros(shape))
    rm_ours, rv_ours = rm.numpy().copy(), rv.numpy().copy()
    y = F.batch_norm(x, rm_ours, rv_ours, w, b, training=training, activation=activation,
                     negative_slope=slope)
    assert_close(y, exact[0], "output")
    assert_close(rv_ours, exact[5], "running_var")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("activation,slope", ACTIVATIONS)
def test_functional_steps_match_torch(masked, activation, slope):
    """batch_stats -> normalization -> batch_norm_apply(activation) -> backward_stats and
    batch_norm_backward_input with the forward's weight, bias and activation -> params."""
    N, C, L = 5, 3, 4
    x = make_input((N, C, L), "3d", torch.float64, seed=19)
    dy = torch.randn(N, C, L, generator=torch.Generator().manual_seed(20), dtype=torch.float64)
    w, b = torch.rand(C, dtype=torch.float64) + 0.5, torch.randn(C, dtype=torch.float64)
    lengths = np.array([4, 1, 3, 0, 2]) if masked else None
    valid = (torch.arange(L)[None, :] < torch.from_numpy(lengths)[:, None] if masked
             else torch.ones(N, L, dtype=torch.bool))
    exact = oracle(x.permute(0, 2, 1)[valid], w, b, None, None, True, activation, slope,
                   dy.permute(0, 2, 1)[valid])
    kw = dict(activation=activation, negative_slope=slope)
    norm = F.normalization_from_batch(F.batch_stats(x, lengths=lengths))
    y = torch.from_numpy(F.batch_norm_apply(x, norm, w, b, lengths=lengths, **kw))
    sums = F.backward_stats(dy, x, norm, lengths=lengths, weight=w, bias=b, **kw)
    gx = torch.from_numpy(F.batch_norm_backward_input(dy, x, norm, w, sums, True,
                                                      lengths=lengths, bias=b, **kw))
    gw, gb = F.batch_norm_backward_params(sums, norm, dtype="float64")
    assert_close(y.permute(0, 2, 1)[valid], exact[0], "output")
    assert_close(gx.permute(0, 2, 1)[valid], exact[1], "grad_input")
    assert_close(gw, exact[2], "grad_weight")
    assert_close(gb, exact[3], "grad_bias")
    plain = F.backward_stats(dy, x, norm, lengths=lengths, weight=w, bias=b)
    gated = torch.from_numpy(plain.sum_dy) != torch.from_numpy(sums.sum_dy)
    assert bool(gated.any())  # without the activation, the sums are not gated


def test_functional_bad_activation_changes_nothing():
    x = np.random.default_rng(1).standard_normal((6, 2))
    rm, rv = np.zeros(2), np.ones(2)
    with pytest.raises(ValueError, match="activation: .*got 'tanh'"):
        F.batch_norm(x, rm, rv, training=True, activation="tanh")
    with pytest.raises(ValueError, match="negative_slope"):
        F.batch_norm(x, rm, rv, training=True, activation="leaky_relu",
                     negative_slope=float("nan"))
    np.testing.assert_array_equal(rm, np.zeros(2))
    np.testing.assert_array_equal(rv, np.ones(2))
    norm = F.normalization_from_batch(F.batch_stats(x))
    with pytest.raises(TypeError, match="activation"):
        F.batch_norm_apply(x, norm, activation=True)
    with pytest.raises(ValueError, match="activation"):
        F.backward_stats(x, x, norm, activation="RELU")
