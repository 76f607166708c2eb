# SPDX-License-Identifier: MIT
"""Masked BatchNorm1d (lengths= / mask=) in bn1d.BatchNorm1d and bn1d.torch.BatchNorm1d against
torch.nn.BatchNorm1d (torch 1.13) applied to the packed valid values x.permute(0, 2, 1)[valid],
a (count, C) batch: outputs at the valid positions, running statistics, num_batches_tracked,
grad_input and grad_weight/grad_bias; 0 (exactly) in the output and grad_input at the padding.

Accuracy: the oracle runs in float64 from the same values (float32 inputs and parameters
widened). A tensor's error is max |ours - oracle| relative to max |oracle|: at most 1e-10 in
float64, 1e-5 in float32 (bn1d rounds each float32 output once from float64). grad_input gets
an absolute floor (1e-12 resp. 2**-20 times max|dy| * max_c |w_c| * invstd_c) because it is
ill-conditioned for a count of 2 (test_module.py explains it).
"""

import numpy as np
import pytest
import torch

import bn1d
import bn1d.torch as bt

NUM_SWEEP_CASES = 48
TOL = {np.float32: 1e-5, np.float64: 1e-10}
GRAD_FLOOR = {np.float32: 2.0**-20, np.float64: 1e-12}


# ---- helpers --------------------------------------------------------------------------------

def assert_close(actual, expected, dtype, floor=0.0, what=""):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    if expected.size == 0:
        return
    err = np.max(np.abs(actual - expected))
    scale = np.max(np.abs(expected))
    assert err <= TOL[dtype] * scale + floor, f"{what}: error {err:.3g}, scale {scale:.3g}"


def valid_of(lengths, mask, N, L):
    """The (N, L) bool tensor of valid positions."""
    if mask is not None:
        return torch.as_tensor(np.asarray(mask, dtype=bool))
    return torch.arange(L)[None, :] < torch.as_tensor(np.asarray(lengths))[:, None]


def packed(x, valid):
    """The valid values of the (N, C, L) tensor x as a (count, C) batch."""
    return x.permute(0, 2, 1)[valid]


def make_input(rng, N, C, L, dtype, channels_last):
    """An (N, C, L) array: contiguous, or the transpose of an (N, L, C) one (channels-last)."""
    if channels_last:
        y = (rng.standard_normal((N, L, C)) * 2 + 1).astype(dtype)
        return y.transpose(0, 2, 1)
    return (rng.standard_normal((N, C, L)) * 2 + 1).astype(dtype)


def random_positions(rng, N, L, use_mask, min_count):
    """(lengths, None) including 0 and L, or (None, mask) with holes, with >= min_count valid."""
    while True:
        if use_mask:
            mask = rng.random((N, L)) < 0.6
            if mask.sum() >= min_count:
                return None, mask
        else:
            lengths = rng.integers(0, L + 1, size=N)
            if N >= 2:
                lengths[rng.integers(N)] = 0
            lengths[rng.integers(N)] = L
            if lengths.sum() >= min_count:
                return lengths.astype(np.int64), None


def grad_floor(dy_packed, x_packed, weight, eps, dtype):
    """GRAD_FLOOR times max|dy| * max_c |w_c| * invstd_c (batch statistics of x_packed)."""
    var = x_packed.double().var(dim=0, unbiased=False)
    invstd = 1.0 / torch.sqrt(var + eps)
    w = torch.ones_like(invstd) if weight is None else weight.detach().double().abs()
    return GRAD_FLOOR[dtype] * float(dy_packed.abs().max()) * float((w * invstd).max())


class Oracle:
    """torch.nn.BatchNorm1d in float64 on the packed valid values."""

    def __init__(self, C, **options):
        self.bn = torch.nn.BatchNorm1d(C, dtype=torch.float64, **options)

    def step(self, x, dy, valid):
        """(output (N, C, L) with 0 at the padding, grad_input, grad_weight, grad_bias)."""
        self.bn.zero_grad(set_to_none=True)
        xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
        p = packed(xt, valid)
        yp = self.bn(p)
        (yp * packed(torch.tensor(np.asarray(dy, dtype=np.float64)), valid)).sum().backward()
        y = torch.zeros(xt.permute(0, 2, 1).shape, dtype=torch.float64)
        y[valid] = yp.detach()
        grads = [None if t is None else t.grad for t in (self.bn.weight, self.bn.bias)]
        return y.permute(0, 2, 1).numpy(), xt.grad.numpy(), grads[0], grads[1]


def init_modules(rng, C, dtype, affine, track, momentum, eps):
    """(bn1d.BatchNorm1d, bn1d.torch.BatchNorm1d, Oracle) with the same random parameters and
    running statistics (values of dtype)."""
    options = dict(affine=affine, track_running_stats=track, momentum=momentum, eps=eps)
    ours = bn1d.BatchNorm1d(C, dtype=dtype, **options)
    adapter = bt.BatchNorm1d(C, dtype=torch.float64 if dtype == np.float64 else torch.float32,
                             **options)
    oracle = Oracle(C, **options)
    state = {}
    if affine:
        state["weight"] = (rng.random(C) + 0.5).astype(dtype)
        state["bias"] = rng.standard_normal(C).astype(dtype)
    if track:
        state["running_mean"] = rng.standard_normal(C).astype(dtype)
        state["running_var"] = (rng.random(C) + 0.5).astype(dtype)
        state["num_batches_tracked"] = np.asarray(3, np.int64)
    ours.load_state_dict(state)
    adapter.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    oracle.bn.load_state_dict({k: torch.from_numpy(v if v.dtype == np.int64
                                                   else v.astype(np.float64))
                               for k, v in state.items()})
    return ours, adapter, oracle


def check_state(module, oracle, dtype, what):
    """running statistics and num_batches_tracked of module (bn1d or bn1d.torch) vs oracle."""
    state = {k: np.asarray(v.detach() if isinstance(v, torch.Tensor) else v)
             for k, v in module.state_dict().items()}
    expected = oracle.bn.state_dict()
    assert list(state) == list(expected)
    for key in ("running_mean", "running_var"):
        if key in expected:
            assert_close(state[key], expected[key].numpy(), dtype, what=f"{what} {key}")
    if "num_batches_tracked" in expected:
        assert int(state["num_batches_tracked"]) == int(expected["num_batches_tracked"])


# ---- the random sweep -------------------------------------------------------------------------

def sweep_case(seed):
    rng = np.random.default_rng(seed)
    dtype = (np.float32, np.float64)[seed % 2]
    N, C, L = int(rng.integers(1, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 8))
    L = max(L, -(-3 // N))  # room for 3 valid values
    affine, track = bool(rng.integers(2)), bool(rng.integers(3))  # track 2 times in 3
    momentum = [0.1, None, 0.3][int(rng.integers(3))]
    eps = [1e-5, 1e-3][int(rng.integers(2))]
    ours, adapter, oracle = init_modules(rng, C, dtype, affine, track, momentum, eps)
    steps = ["train"] * int(rng.integers(1, 4)) + ["eval"] * int(rng.integers(1, 3))
    for step, mode in enumerate(steps):
        for m in (ours, adapter, oracle.bn):
            m.train(mode == "train")
        batch_stats = mode == "train" or not track
        use_mask = bool(rng.integers(2))
        lengths, mask = random_positions(rng, N, L, use_mask, 3 if batch_stats else 1)
        valid = valid_of(lengths, mask, N, L)
        x = make_input(rng, N, C, L, dtype, channels_last=bool(rng.integers(2)))
        dy = rng.standard_normal((N, C, L)).astype(dtype)
        what = f"seed {seed} step {step} ({mode})"
        y_ref, gx_ref, gw_ref, gb_ref = oracle.step(x, dy, valid)
        floor = grad_floor(packed(torch.from_numpy(dy.astype(np.float64)), valid),
                           packed(torch.from_numpy(x.astype(np.float64)), valid),
                           oracle.bn.weight, eps, dtype) if batch_stats else 0.0
        pads = ~valid.numpy()

        # bn1d.BatchNorm1d (numpy)
        y = ours(x, lengths=lengths, mask=mask)
        gx, gw, gb = ours.backward(dy)
        # bn1d.torch.BatchNorm1d (autograd); lengths/mask as tensors
        xt = torch.from_numpy(x).requires_grad_(True)
        adapter.zero_grad(set_to_none=True)
        yt = adapter(xt, lengths=None if lengths is None else torch.from_numpy(lengths),
                     mask=None if mask is None else torch.from_numpy(mask))
        (yt * torch.from_numpy(dy)).sum().backward()
        results = {"numpy": (y, gx, gw, gb),
                   "torch": (yt.detach().numpy(), xt.grad.numpy(),
                             None if adapter.weight is None else adapter.weight.grad.numpy(),
                             None if adapter.bias is None else adapter.bias.grad.numpy())}
        for name, (y_, gx_, gw_, gb_) in results.items():
            assert y_.dtype == dtype and gx_.dtype == dtype
            assert np.all(y_.transpose(0, 2, 1)[pads] == 0), f"{what} {name}: output pads"
            assert np.all(gx_.transpose(0, 2, 1)[pads] == 0), f"{what} {name}: grad_input pads"
            assert_close(y_, y_ref, dtype, what=f"{what} {name} output")
            assert_close(gx_, gx_ref, dtype, floor, what=f"{what} {name} grad_input")
            if affine:
                assert_close(gw_, gw_ref.numpy(), dtype, what=f"{what} {name} grad_weight")
                assert_close(gb_, gb_ref.numpy(), dtype, what=f"{what} {name} grad_bias")
            else:
                assert gw_ is None and gb_ is None
        check_state(ours, oracle, dtype, what)
        check_state(adapter, oracle, dtype, what + " torch")
        # infer: the eval-mode output, whatever the mode, changing nothing
        if not batch_stats:
            assert_close(ours.infer(x, lengths=lengths, mask=mask), y_ref, dtype,
                         what=f"{what} infer")


@pytest.mark.parametrize("block", range(4))
def test_random_sweep_against_torch_on_packed_values(block):
    for seed in range(block, NUM_SWEEP_CASES, 4):
        sweep_case(7000 + seed)


def test_lengths_and_mask_give_the_same_result():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 6))
    lengths = np.array([6, 0, 2, 5])
    mask = np.arange(6)[None, :] < lengths[:, None]
    a, b = bn1d.BatchNorm1d(3, dtype="float64"), bn1d.BatchNorm1d(3, dtype="float64")
    np.testing.assert_array_equal(a(x, lengths=lengths), b(x, mask=mask))
    np.testing.assert_array_equal(a.running_var, b.running_var)
    dy = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(a.backward(dy)[0], b.backward(dy)[0])


def test_lengths_as_list_tensor_and_unsigned():
    x = np.random.default_rng(1).standard_normal((3, 2, 4))
    expected = bn1d.BatchNorm1d(2, dtype="float64")(x, lengths=np.array([4, 2, 1]))
    for lengths in ([4, 2, 1], torch.tensor([4, 2, 1]), np.array([4, 2, 1], np.uint8),
                    np.array([4, 2, 1], np.int32)):
        np.testing.assert_array_equal(bn1d.BatchNorm1d(2, dtype="float64")(x, lengths=lengths),
                                      expected)


def test_backward_uses_the_forwards_positions():
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((3, 2, 5)), rng.standard_normal((3, 2, 5))
    m = bn1d.BatchNorm1d(2, dtype="float64")
    m(x, lengths=[5, 3, 0])
    gx = m.backward(dy)[0]
    assert np.all(gx[1, :, 3:] == 0) and np.all(gx[2] == 0)
    m(x)  # an unmasked forward: backward is unmasked again
    assert np.all(m.backward(dy)[0] != 0)


# ---- errors: clear, and nothing changes -----------------------------------------------------

def snapshot(m):
    return {k: np.array(v, copy=True) for k, v in m.state_dict().items()}


def assert_unchanged(m, before):
    after = snapshot(m)
    assert list(after) == list(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


BAD_POSITIONS = [
    (dict(lengths=[3, 3]), ValueError, "lengths"),          # 2 values for N = 3
    (dict(lengths=[3, 5, 2]), ValueError, "lengths"),       # 5 > L = 4
    (dict(lengths=[3, -1, 2]), ValueError, "lengths"),      # negative
    (dict(lengths=[3.0, 1.0, 2.0]), TypeError, "lengths"),  # float lengths
    (dict(lengths=[True, True, False]), TypeError, "lengths"),
    (dict(lengths=[[3, 1, 2]]), ValueError, "lengths"),     # 2-D
    (dict(mask=np.ones((3, 5), bool)), ValueError, "mask"),  # wrong L
    (dict(mask=np.ones((2, 4), bool)), ValueError, "mask"),  # wrong N
    (dict(mask=np.ones((3, 4), np.float32)), TypeError, "mask"),
    (dict(mask=np.ones((3, 4), np.int64)), TypeError, "mask"),
    (dict(mask=np.ones(12, bool)), ValueError, "mask"),      # 1-D
    (dict(lengths=[1, 1, 1], mask=np.ones((3, 4), bool)), ValueError, "lengths, mask"),
    (dict(lengths="abc"), TypeError, "lengths"),
]


@pytest.mark.parametrize("kwargs,error,name", BAD_POSITIONS)
def test_bad_positions_are_clear_errors_that_change_nothing(kwargs, error, name):
    x = np.random.default_rng(3).standard_normal((3, 2, 4)).astype(np.float32)
    for training in (True, False):
        m = bn1d.BatchNorm1d(2, momentum=None).train(training)
        m(x)  # a forward to compare the count with
        before = snapshot(m)
        with pytest.raises(error, match=f"^{name}"):
            m(x, **kwargs)
        assert_unchanged(m, before)
        with pytest.raises(error, match=f"^{name}"):
            m.infer(x, **kwargs)
        # the torch adapter: the same errors, its count restored
        t = bt.BatchNorm1d(2).train(training)
        with pytest.raises(error, match=f"^{name}"):
            t(torch.from_numpy(x), **kwargs)
        assert int(t.num_batches_tracked) == 0


@pytest.mark.parametrize("lengths", [[0, 0, 0], [1, 0, 0], [0, 0, 1]])
def test_too_few_valid_values_in_training_is_an_error(lengths):
    x = np.random.default_rng(4).standard_normal((3, 2, 4))
    m = bn1d.BatchNorm1d(2, dtype="float64")
    before = snapshot(m)
    with pytest.raises(ValueError):
        m(x, lengths=lengths)
    assert_unchanged(m, before)
    t = bt.BatchNorm1d(2, dtype=torch.float64)
    with pytest.raises(ValueError):
        t(torch.from_numpy(x), lengths=torch.tensor(lengths))
    assert int(t.num_batches_tracked) == 0
    assert torch.equal(t.running_mean, torch.zeros(2))
    # eval mode with running statistics needs no batch statistics: the pads give zeros
    m.eval()
    y = m(x, lengths=lengths)
    assert np.all(y.transpose(0, 2, 1)[~valid_of(lengths, None, 3, 4).numpy()] == 0)


def test_masked_input_must_be_3d():
    m = bn1d.BatchNorm1d(2)
    with pytest.raises(ValueError, match="^lengths"):
        m(np.ones((3, 2), np.float32), lengths=[1, 1, 1])
    with pytest.raises(ValueError):
        bt.BatchNorm1d(2)(torch.ones(3, 2), lengths=[1, 1, 1])


def test_torch_adapter_masked_needs_a_cpu_float_input():
    m = bt.BatchNorm1d(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="^lengths, mask"):
        m(torch.ones(3, 2, 4, dtype=torch.int64), lengths=[1, 2, 3])
    assert int(m.num_batches_tracked) == 0


# ---- bn1d.functional.batch_norm ---------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_functional_batch_norm_against_torch_on_packed_values(seed):
    rng = np.random.default_rng(900 + seed)
    N, C, L = 4, 3, 5
    x = rng.standard_normal((N, C, L)) * 3 + 1
    if seed % 2:
        x = np.ascontiguousarray(x.transpose(0, 2, 1)).transpose(0, 2, 1)  # channels-last
    lengths, mask = random_positions(rng, N, L, use_mask=seed >= 3, min_count=3)
    valid = valid_of(lengths, mask, N, L)
    w, b = rng.random(C) + 0.5, rng.standard_normal(C)
    mean, var = rng.standard_normal(C), rng.random(C) + 0.5
    for training in (True, False):
        ours_mean, ours_var = torch.tensor(mean), torch.tensor(var)  # updated through views
        ref_mean, ref_var = torch.tensor(mean), torch.tensor(var)
        y = bn1d.functional.batch_norm(x, ours_mean, ours_var, w, b, training, 0.2, 1e-4,
                                       lengths=lengths, mask=mask)
        ref = torch.nn.functional.batch_norm(packed(torch.from_numpy(x), valid), ref_mean,
                                             ref_var, torch.from_numpy(w), torch.from_numpy(b),
                                             training, 0.2, 1e-4)
        assert np.all(y.transpose(0, 2, 1)[~valid.numpy()] == 0)
        assert_close(y.transpose(0, 2, 1)[valid.numpy()], ref.numpy(), np.float64)
        assert_close(ours_mean.numpy(), ref_mean.numpy(), np.float64)
        assert_close(ours_var.numpy(), ref_var.numpy(), np.float64)
        assert training or torch.equal(ours_var, torch.tensor(var))
    # unmasked: torch's functional itself
    running = np.array(mean), np.array(var)
    y = bn1d.functional.batch_norm(x, *running, training=True)
    ref_mean, ref_var = torch.tensor(mean), torch.tensor(var)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(x), ref_mean, ref_var, training=True)
    assert_close(y, ref.numpy(), np.float64)
    assert_close(running[1], ref_var.numpy(), np.float64)


def test_functional_batch_norm_errors_change_nothing():
    x = np.random.default_rng(6).standard_normal((3, 2, 4))
    mean, var = np.zeros(2), np.ones(2)
    with pytest.raises(ValueError):  # all pads in training: no statistics
        bn1d.functional.batch_norm(x, mean, var, training=True, lengths=[0, 0, 0])
    with pytest.raises(ValueError, match="^mask"):
        bn1d.functional.batch_norm(x, mean, var, training=True, mask=np.ones((3, 5), bool))
    with pytest.raises(TypeError, match="^lengths"):
        bn1d.functional.batch_norm(x, mean, var, training=True, lengths=[1.5, 2, 3])
    assert np.all(mean == 0) and np.all(var == 1)
    read_only = np.zeros(2)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="^running_mean"):
        bn1d.functional.batch_norm(x, read_only, var, training=True)


# ---- 16-bit inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("input_dtype", [torch.float16, torch.bfloat16])
def test_masked_16bit_input_to_float32_module(input_dtype):
    """Mixed precision: the output has the input's dtype, each value within one rounding (of
    the input's dtype) of the float64 oracle on the packed values."""
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.standard_normal((3, 4, 6))).to(input_dtype)
    lengths = torch.tensor([6, 2, 4])
    valid = valid_of(lengths, None, 3, 6)
    ref = torch.nn.BatchNorm1d(4, dtype=torch.float64)(packed(x.double(), valid)).detach()
    ulp = 2.0**-10 if input_dtype == torch.float16 else 2.0**-7
    if input_dtype == torch.float16:
        y = torch.from_numpy(bn1d.BatchNorm1d(4)(x.numpy(), lengths=lengths))
    else:  # numpy has no bfloat16: a torch tensor in, a BFloat16Tensor out
        y = torch.from_dlpack(bn1d.BatchNorm1d(4)(x, lengths=lengths))
    yt = bt.BatchNorm1d(4)(x, lengths=lengths)
    for out in (y, yt):
        assert out.dtype == input_dtype
        assert torch.all(out.permute(0, 2, 1)[~valid] == 0)
        torch.testing.assert_close(out.permute(0, 2, 1)[valid].double(), ref, rtol=ulp,
                                   atol=ulp * float(ref.abs().max()))
