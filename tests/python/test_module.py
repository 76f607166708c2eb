# SPDX-License-Identifier: MIT
"""bn1d's Python module against torch.nn.BatchNorm1d (the Debian torch 1.13) as the oracle.

Accuracy rule (test_random_case):
  * float64: every tensor within 1e-10 of torch float64, relative to max |torch| of the tensor.
    grad_input with batch statistics is ill-conditioned when N*L is tiny: for N*L == 2 it is
    O(eps / var) times its terms (exactly 0 for eps == 0), so bn1d and torch both return
    rounding noise of the terms' size (seed 142 of a 3000-seed sweep: both ~1e-16, exact 0).
    Its tolerance therefore also has an absolute floor of GRAD_INPUT_FLOOR (1e-13) times the
    terms' scale max|grad_output| * max_c |weight_c| * invstd_c — still ~1000x tighter than
    any real error, and the same for every implementation.
  * float32: the reference is torch run in float64 from the same float32 inputs, parameters and
    buffers. Our error against it (max abs difference / max |reference|) must not exceed
    FLOAT32_FACTOR (4) times torch-float32's own error against it, plus FLOAT32_FLOOR = 2**-21
    (4 float32 ulps relative to the tensor's largest magnitude: bn1d rounds every element once
    from float64, so it needs no more; torch float32 may be exact by luck on small tensors).
    grad_input gets the same ill-conditioning floor as in float64, scaled to float32:
    GRAD_INPUT_FLOOR32 = 8 float32 half-ulps of the terms' scale (seed 20527, N*L == 2: bn1d
    6e-3 and torch 1.4e-3 relative to an exact result ~1e-5 times its terms — both noise).
  * num_batches_tracked: exact.
"""

import gc
import threading

import numpy as np
import pytest
import torch

import bn1d

FLOAT64_RTOL = 1e-10
GRAD_INPUT_FLOOR = 1e-13
FLOAT32_FACTOR = 4.0
FLOAT32_FLOOR = 2.0**-21
GRAD_INPUT_FLOOR32 = 8 * 2.0**-24

NUM_RANDOM_CASES = 2000
BASE_SEED = 20240


# ---- helpers --------------------------------------------------------------------------------

def torch_module(num_features, dtype, **kw):
    m = torch.nn.BatchNorm1d(num_features, **kw)
    return m.to(torch.float64 if dtype == np.float64 else torch.float32)


def to_torch(a, dtype=None, requires_grad=False):
    t = torch.from_numpy(np.ascontiguousarray(a))
    if dtype is not None:
        t = t.to(dtype)
    return t.requires_grad_(requires_grad)


def rel_err(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    scale = np.max(np.abs(ref))
    diff = np.max(np.abs(a - ref))
    return diff / scale if scale > 0 else diff


def layout(rng, a, kind):
    """An array with the values of @p a (N, C[, L]) in the memory layout @p kind."""
    if kind == "contiguous":
        return np.ascontiguousarray(a)
    if kind == "channels_last":  # (N, L, C) memory viewed as (N, C, L); (C, N) memory for 2-D
        axes = (0, 2, 1) if a.ndim == 3 else (1, 0)
        return np.ascontiguousarray(np.transpose(a, axes)).transpose(axes)
    if kind == "sliced":  # every other element of a bigger buffer, the N axis reversed
        big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
        index = tuple(slice(None, None, 2) for _ in a.shape)
        big[index] = a[::-1]
        view = big[index][::-1]
        assert not view.flags.c_contiguous or a.size <= 1
        return view
    raise AssertionError(kind)


def grad_input_scale(x, dy, L, cfg, ref, ref_running_var, batch_statistics):
    """The scale of grad_input's terms, max|dy| · max_c |w_c| · invstd_c (module docstring)."""
    if batch_statistics:
        var = x.astype(np.float64).var(axis=(0,) if L is None else (0, 2))
    else:
        var = ref_running_var.astype(np.float64)
    w = np.abs(ref.weight.detach().numpy()) if cfg["affine"] else 1.0
    return np.max(np.abs(dy)) * np.max(w / np.sqrt(var + ref.eps))


def check_against_torch(mine, results, dtype, grad_input_scale, where):
    """The accuracy rule of the module docstring for every tensor in `mine` (numpy or None):
    against results["torch"] (same dtype) and results["ref"] (torch in float64)."""
    for key, value in mine.items():
        t, r = results["torch"][key], results["ref"][key]
        if t is None:
            assert value is None, f"{key} should be None; {where}"
            continue
        assert value is not None and value.dtype == dtype, f"{key}; {where}"
        if dtype == np.float64:
            err = rel_err(value, t)
            scale = max(np.max(np.abs(t), initial=0.0), 1e-300)
            floor = GRAD_INPUT_FLOOR * grad_input_scale / scale if key == "grad_input" else 0
            assert err <= FLOAT64_RTOL + floor, (
                f"{key}: relative error {err:.3g} (max |torch| {scale:.3g}); {where}")
        else:
            err, torch_err = rel_err(value, r), rel_err(t, r)
            scale = max(np.max(np.abs(r), initial=0.0), 1e-300)
            # grad_input's terms in float32: a few ulps of their scale (see the docstring).
            floor = (GRAD_INPUT_FLOOR32 * grad_input_scale / scale) if key == "grad_input" else 0
            assert err <= FLOAT32_FACTOR * torch_err + FLOAT32_FLOOR + floor, (
                f"{key}: error {err:.3g} vs torch float32's {torch_err:.3g}; {where}")


def case_config(seed):
    rng = np.random.default_rng(seed)

    def log_uniform(lo, hi, edge):
        """lo with probability 1/8 (an edge), else log-uniform in [lo, hi]."""
        if rng.random() < 0.125:
            return edge
        return int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))

    # The ranges (N 2..512, C 1..300, L absent or 1..2000, edges N = 2, C = 1, L = 1),
    # with N·C·L capped at 2^17 by shrinking L, then N, so that 2,000 cases stay fast.
    N, C = log_uniform(2, 512, 2), log_uniform(1, 300, 1)
    L = None if rng.random() < 1 / 3 else log_uniform(1, 2000, 1)
    while N * C * (L or 1) > 1 << 17:
        if L is not None and L > 1:
            L = max(1, L // 2)
        else:
            N = max(2, N // 2)
    cfg = dict(
        N=N,
        C=C,
        L=L,
        dtype=np.float32 if rng.random() < 0.5 else np.float64,
        momentum=[0.0, 0.1, 0.5, 1.0, None][int(rng.integers(0, 5))],
        eps=[1e-5, 1e-5, 1e-3, 0.0][int(rng.integers(0, 4))],
        affine=bool(rng.random() < 0.7),
        track=bool(rng.random() < 0.7),
        modes=[bool(rng.random() < 0.7) for _ in range(3)],
        layouts=[["contiguous", "channels_last", "sliced"][int(rng.integers(0, 3))]
                 for _ in range(3)],
    )
    return rng, cfg


def run_case(seed):
    rng, cfg = case_config(seed)
    N, C, L, dtype = cfg["N"], cfg["C"], cfg["L"], cfg["dtype"]
    kw = dict(eps=cfg["eps"], momentum=cfg["momentum"], affine=cfg["affine"],
              track_running_stats=cfg["track"])
    ours = bn1d.BatchNorm1d(C, dtype=np.dtype(dtype).name, **kw)
    oracle = torch_module(C, dtype, **kw)  # torch in our dtype
    ref = torch_module(C, np.float64, **kw)  # float64 reference (== oracle for float64)

    # Random parameters and running statistics, loaded from torch's state dict.
    with torch.no_grad():
        if cfg["affine"]:
            oracle.weight.copy_(to_torch(rng.uniform(0.5, 2.0, C) * rng.choice([-1, 1], C)))
            oracle.bias.copy_(to_torch(rng.normal(0, 1, C)))
        if cfg["track"]:
            oracle.running_mean.copy_(to_torch(rng.normal(0, 1, C)))
            oracle.running_var.copy_(to_torch(rng.uniform(0.25, 4.0, C)))
    ref.load_state_dict({k: v.to(torch.float64) if v.is_floating_point() else v
                         for k, v in oracle.state_dict().items()})
    ours.load_state_dict(oracle.state_dict())

    shape = (N, C) if L is None else (N, C, L)
    params_of = lambda m: [m.weight, m.bias] if cfg["affine"] else []  # noqa: E731
    for step in range(3):
        training, kind = cfg["modes"][step], cfg["layouts"][step]
        ours.train(training)
        oracle.train(training)
        ref.train(training)
        bshape = (1, C, 1) if L is not None else (1, C)
        x = (rng.normal(0, 1, shape) * rng.uniform(0.2, 5.0, C).reshape(bshape)
             + rng.normal(0, 2, C).reshape(bshape)).astype(dtype)
        dy = rng.normal(0, 1, shape).astype(dtype)
        x_ours, dy_ours = layout(rng, x, kind), layout(rng, dy, kind)

        y = ours(x_ours)
        gi, gw, gb = ours.backward(dy_ours)
        assert y.dtype == dtype and y.shape == shape and gi.shape == shape

        results = {}
        for name, m, tdtype in (("torch", oracle, None), ("ref", ref, torch.float64)):
            xt = to_torch(x, tdtype, requires_grad=True)
            yt = m(xt)
            grads = torch.autograd.grad(yt, [xt] + params_of(m), to_torch(dy, tdtype))
            gwt, gbt = (grads[1], grads[2]) if cfg["affine"] else (None, None)
            results[name] = dict(
                output=yt.detach().numpy(), grad_input=grads[0].numpy(),
                grad_weight=None if gwt is None else gwt.numpy(),
                grad_bias=None if gbt is None else gbt.numpy(),
                running_mean=None if m.running_mean is None else m.running_mean.numpy(),
                running_var=None if m.running_var is None else m.running_var.numpy())
        mine = dict(output=y, grad_input=gi, grad_weight=gw, grad_bias=gb,
                    running_mean=ours.running_mean, running_var=ours.running_var)

        scale = grad_input_scale(x, dy, L, cfg, ref, results["ref"]["running_var"],
                                 training or not cfg["track"])
        where = f"seed {seed} step {step} {cfg}"
        check_against_torch(mine, results, dtype, scale, where)
        expected_count = int(oracle.num_batches_tracked) if cfg["track"] else None
        assert ours.num_batches_tracked == expected_count, where


@pytest.mark.parametrize("seed", range(BASE_SEED, BASE_SEED + NUM_RANDOM_CASES))
def test_random_case(seed):
    run_case(seed)


def test_random_cases_cover_the_space():
    cfgs = [case_config(s)[1] for s in range(BASE_SEED, BASE_SEED + NUM_RANDOM_CASES)]
    assert {c["momentum"] for c in cfgs} == {0.0, 0.1, 0.5, 1.0, None}
    assert {c["dtype"] for c in cfgs} == {np.float32, np.float64}
    assert {(c["affine"], c["track"]) for c in cfgs} == {(a, t) for a in (0, 1) for t in (0, 1)}
    assert any(c["L"] is None for c in cfgs) and any(c["L"] == 1 for c in cfgs)
    assert {k for c in cfgs for k in c["layouts"]} == {"contiguous", "channels_last", "sliced"}
    assert any(not all(c["modes"]) for c in cfgs) and any(all(c["modes"]) for c in cfgs)


# ---- errors: same class and message as torch --------------------------------------------------

def torch_message(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.type, str(info.value).replace("torch.Size(", "").replace("])", "]")


@pytest.mark.parametrize("shape, training, track", [
    ((2, 100, 1, 1), True, True),
    ((2, 100, 1, 1), False, True),
    ((100,), True, True),
    ((1, 100), True, True),
    ((1, 100, 1), True, True),
    ((1, 100), False, False),
    ((1, 100), True, False),
])
def test_errors_match_torch(shape, training, track):
    x = np.zeros(shape, dtype=np.float32)
    t = torch.nn.BatchNorm1d(100, track_running_stats=track).train(training)
    expected_type, expected = torch_message(lambda: t(torch.from_numpy(x)))
    ours = bn1d.BatchNorm1d(100, track_running_stats=track).train(training)
    with pytest.raises(ValueError) as info:
        ours(x)
    assert expected_type is ValueError
    assert str(info.value) == expected
    # A call that throws changes nothing (torch counts the batch: a documented difference).
    assert ours.num_batches_tracked == (0 if track else None)


def test_error_messages():
    m = bn1d.BatchNorm1d(4)
    with pytest.raises(ValueError, match="backward called before forward"):
        m.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError,
                       match="expected dtype float32, float64, bfloat16 or float16, got int64"):
        m(np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="expected a float32 input"):
        m(np.zeros((2, 4), np.float64))
    with pytest.raises(ValueError, match="expected input with 4 channels"):
        m(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="float16"):  # pure float16 takes float16 only
        bn1d.BatchNorm1d(4, dtype="float16")(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="float32"):  # non-native byte order
        m(np.zeros((2, 4), ">f4"))
    m(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="grad_output"):
        m.backward(np.zeros((3, 4), np.float32))
    # Strides that are not a multiple of the item size, and misaligned data.
    buf = np.zeros(256, np.uint8)
    odd = np.ndarray((2, 4), np.float32, buffer=buf, strides=(18, 4))
    with pytest.raises(ValueError, match="not a multiple of the item size"):
        m(odd)
    misaligned = np.ndarray((2, 4), np.float32, buffer=buf, offset=1, strides=(16, 4))
    with pytest.raises(ValueError, match="aligned"):
        m(misaligned)
    for kwargs in (dict(num_features=0), dict(num_features=4, eps=-1.0),
                   dict(num_features=4, momentum=1.5), dict(num_features=4, dtype="int64")):
        with pytest.raises(ValueError):
            bn1d.BatchNorm1d(**kwargs)
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        m.train("yes")


# ---- module API -----------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    {}, dict(momentum=None), dict(affine=False), dict(track_running_stats=False),
    dict(eps=1e-3, momentum=0.5, affine=False, track_running_stats=False), dict(eps=0.25),
])
def test_repr(kw):
    assert repr(bn1d.BatchNorm1d(100, **kw)) == repr(torch.nn.BatchNorm1d(100, **kw))


def test_repr_default():
    assert repr(bn1d.BatchNorm1d(100)) == (
        "BatchNorm1d(100, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)")
    assert repr(bn1d._bn1d.BatchNorm1d(100)).startswith("BatchNorm1d(100, eps=1e-05")


def test_mode():
    m = bn1d.BatchNorm1d(3)
    assert m.training is True
    assert m.eval() is m and m.training is False
    assert m.train() is m and m.training is True
    m.training = False
    assert m.train(False).training is False


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_input_zero_copy(dtype):
    rng = np.random.default_rng(4)
    nlc = rng.normal(size=(7, 9, 5)).astype(dtype)  # channels-last memory
    x = nlc.transpose(0, 2, 1)  # (N, C, L) view, no copy
    assert not x.flags.c_contiguous
    m = bn1d.BatchNorm1d(5, dtype=np.dtype(dtype).name)
    t = torch_module(5, dtype)
    xt = to_torch(x, requires_grad=True)
    dy = rng.normal(size=x.shape).astype(dtype)
    expected = t(xt)
    gx, gw, gb = torch.autograd.grad(expected, [xt, t.weight, t.bias], to_torch(dy))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m(x), expected.detach().numpy(), **tol)
    ours = m.backward(dy.transpose(0, 2, 1).copy().transpose(0, 2, 1))
    for a, b in zip(ours, (gx, gw, gb)):
        np.testing.assert_allclose(a, b.numpy(), **tol)


def test_backward_keeps_the_input_alive():
    rng = np.random.default_rng(5)
    m = bn1d.BatchNorm1d(8, dtype="float64")
    t = torch_module(8, np.float64)
    x = rng.normal(size=(16, 8, 3))
    m(x.copy())  # the only reference to this input is the module's
    gc.collect()
    junk = [np.full((16, 8, 3), 1e30) for _ in range(20)]  # would reuse freed memory
    dy = rng.normal(size=x.shape)
    xt = to_torch(x, requires_grad=True)
    expected = torch.autograd.grad(t(xt), xt, to_torch(dy))[0].numpy()
    np.testing.assert_allclose(m.backward(dy)[0], expected, rtol=1e-12, atol=1e-12)
    del junk


def test_torch_tensor_input_via_dlpack():
    torch.manual_seed(1)
    x = torch.randn(6, 4, 5).transpose(1, 2).contiguous().transpose(1, 2)  # non-contiguous
    x.requires_grad_(True)
    m = bn1d.BatchNorm1d(4)
    t = torch.nn.BatchNorm1d(4)
    y = m(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    expected = t(x)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    dy = torch.randn(6, 4, 5)
    gx, gw, gb = torch.autograd.grad(expected, [x, t.weight, t.bias], dy)
    for a, b in zip(m.backward(dy), (gx, gw, gb)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.running_var, t.running_var.numpy(), rtol=1e-6)


def test_infer_changes_nothing():
    rng = np.random.default_rng(6)
    m = bn1d.BatchNorm1d(3)
    m(rng.normal(size=(4, 3)).astype(np.float32))
    state = m.state_dict()
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = m.infer(x)
    assert m.training
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    np.testing.assert_array_equal(y, m.eval()(x))


def test_empty_batch():
    m = bn1d.BatchNorm1d(3)
    y = m(np.zeros((0, 3), np.float32))
    assert y.shape == (0, 3) and m.num_batches_tracked == 0


def test_list_input():
    m = bn1d.BatchNorm1d(2, dtype="float64")
    np.testing.assert_allclose(m([[1.0, 2.0], [3.0, 6.0]]), [[-1, -1], [1, 1]], atol=1e-5)


def test_threads():
    """Calls release the GIL; concurrent use neither crashes nor changes results."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(64, 16, 32)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    ref = bn1d.BatchNorm1d(16)
    expected_y = ref(x)
    expected_g = ref.backward(dy)
    frozen = bn1d.BatchNorm1d(16)
    frozen(x)
    expected_infer = frozen.infer(x)
    shared = bn1d.BatchNorm1d(16)
    errors = []

    def work():
        try:
            m = bn1d.BatchNorm1d(16)
            for _ in range(20):
                m.reset_running_stats()
                np.testing.assert_array_equal(m(x), expected_y)
                for a, b in zip(m.backward(dy), expected_g):
                    np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(frozen.infer(x), expected_infer)
                shared(x)  # one module from many threads: serialized, no crash
                shared.backward(dy)
                shared.infer(x)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert shared.num_batches_tracked == 80


def test_failed_forward_keeps_the_previous_input():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 3, 2))
    dy = rng.normal(size=x.shape)
    m = bn1d.BatchNorm1d(3, dtype="float64")
    t = torch_module(3, np.float64)
    m(x.copy())
    with pytest.raises(ValueError):
        m(np.zeros((1, 3)))  # N*L == 1: throws, state and saved input unchanged
    gc.collect()
    xt = to_torch(x, requires_grad=True)
    expected = torch.autograd.grad(t(xt), xt, to_torch(dy))[0].numpy()
    np.testing.assert_allclose(m.backward(dy)[0], expected, rtol=1e-12, atol=1e-12)
    assert m.num_batches_tracked == 1


def test_broadcast_input():
    """Zero strides (np.broadcast_to, read-only) are used as they are."""
    row = np.arange(3, dtype=np.float64)
    x = np.broadcast_to(row, (4, 3))
    m = bn1d.BatchNorm1d(3, dtype="float64", track_running_stats=False)
    np.testing.assert_array_equal(m(x), np.zeros((4, 3)))
    x3 = np.broadcast_to(np.arange(4.0)[:, None, None], (4, 2, 5))
    expected = torch.nn.BatchNorm1d(2).double()(torch.from_numpy(x3.copy())).detach().numpy()
    np.testing.assert_allclose(bn1d.BatchNorm1d(2, dtype="float64")(x3), expected, rtol=1e-12)


def test_read_only_arrays():
    """Read-only arrays (inputs, gradients, state values) are used without a copy and never
    written: bn1d wraps them as read-only tensors."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 3, 2))
    dy = rng.normal(size=x.shape)
    x_before, dy_before = x.copy(), dy.copy()
    x.flags.writeable = False
    dy.flags.writeable = False
    m = bn1d.BatchNorm1d(3, dtype="float64")
    t = torch_module(3, np.float64)
    xt = to_torch(x_before, requires_grad=True)
    yt = t(xt)
    y = m(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert y.flags.writeable
    grad_input = m.backward(dy)[0]
    expected = torch.autograd.grad(yt, xt, to_torch(dy_before))[0].numpy()
    np.testing.assert_allclose(grad_input, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)
    state = m.state_dict()
    for value in state.values():
        value.flags.writeable = False
    n = bn1d.BatchNorm1d(3, dtype="float64")
    n.load_state_dict(state)
    np.testing.assert_array_equal(n.running_mean, m.running_mean)
    n.running_mean[:] = 5  # the module's own copy
    assert not np.array_equal(state["running_mean"], n.running_mean)
