# SPDX-License-Identifier: MIT
"""bn1d.functional's separable steps (batch_stats, combine_stats, normalization_from_batch /
_from_running, update_running_stats, batch_norm_apply, backward_stats, combine_grad_stats,
batch_norm_backward_input / _params) against torch 1.13 in float64 on the same values: composed
as one training or evaluation step, split into disjoint slices of the batch and combined (what
bn1d.torch.SyncBatchNorm does across processes, here in one process), masked, with numpy arrays
and torch tensors of any layout, and with bad arguments.

Accuracy: a tensor's error is max |ours - oracle| relative to max |oracle|: 1e-12 in float64,
1e-6 in float32 (bn1d computes in float64 and rounds each float32 result once); 16-bit outputs
and input gradients within 1 ulp of the oracle rounded to their dtype.
"""

import numpy as np
import pytest
import torch

import bn1d
import bn1d.functional as F
from test_torch_parity_16bit import _ulps

TOL = {np.float32: 1e-6, np.float64: 1e-12}
EPS, MOMENTUM = 1e-4, 0.3
SHAPES = [(16, 3), (6, 4, 5)]


# ---- helpers --------------------------------------------------------------------------------

def t64(a):
    """a (numpy array, BFloat16Tensor or torch tensor) as a float64 torch tensor (a copy)."""
    if isinstance(a, bn1d.BFloat16Tensor):
        return torch.from_dlpack(a).double()
    if isinstance(a, torch.Tensor):
        return a.detach().double().clone()
    return torch.from_numpy(np.array(a, dtype=np.float64))


def assert_close(actual, expected, tol, what=""):
    actual, expected = t64(actual), t64(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    if expected.numel() == 0:
        return
    err = float((actual - expected).abs().max())
    scale = float(expected.abs().max())
    assert err <= tol * scale, f"{what}: error {err:.3g}, scale {scale:.3g}"


def random_case(seed, shape, dtype):
    """x (mean 1, scale 2), dy, weight, bias and running statistics as numpy arrays of dtype."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.uniform(0.5, 1.5, C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    return x, dy, w, b, rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)


def torch_step(x, dy, w, b, rm, rv, training):
    """torch's float64 batch_norm forward and autograd backward: (y, dx, dw, db, rm, rv)."""
    xt = t64(x).requires_grad_()
    wt, bt = t64(w).requires_grad_(), t64(b).requires_grad_()
    rm, rv = t64(rm), t64(rv)
    y = torch.nn.functional.batch_norm(xt, rm, rv, wt, bt, training, MOMENTUM, EPS)
    y.backward(t64(dy))
    return y.detach(), xt.grad, wt.grad, bt.grad, rm, rv


def bn1d_train_step(x, dy, w, b, rm, rv, pdtype, **valid):
    """The separable steps as one training step on a single part; rm, rv updated in place."""
    stats = F.batch_stats(x, **valid)
    norm = F.normalization_from_batch(stats, eps=EPS)
    F.update_running_stats(rm, rv, stats, momentum=MOMENTUM)
    y = F.batch_norm_apply(x, norm, w, b, **valid)
    sums = F.backward_stats(dy, x, norm, **valid)
    dx = F.batch_norm_backward_input(dy, x, norm, w, sums, batch_statistics=True, **valid)
    dw, db = F.batch_norm_backward_params(sums, norm, dtype=pdtype)
    return y, dx, dw, db


def bn1d_eval_step(x, dy, w, b, rm, rv, pdtype, **valid):
    norm = F.normalization_from_running(rm, rv, eps=EPS)
    y = F.batch_norm_apply(x, norm, w, b, **valid)
    sums = F.backward_stats(dy, x, norm, **valid)
    dx = F.batch_norm_backward_input(dy, x, norm, w, sums, batch_statistics=False, **valid)
    dw, db = F.batch_norm_backward_params(sums, norm, dtype=pdtype)
    return y, dx, dw, db


NAMES = ("output", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var")


def assert_step_equals(ours, ref, tol, dtype):
    """ours and ref: (output, grad_input, grad_weight, grad_bias[, running_mean, running_var])."""
    for got, want, what in zip(ours, ref, NAMES):
        assert got.dtype == dtype, (what, got.dtype)
        assert_close(got, want, tol, what)


def packed(x, valid):
    """The valid values of the (N, C, L) array x as a (count, C) batch (torch float64)."""
    return t64(x).permute(0, 2, 1)[valid]


def slices_of(N, bounds):
    return [slice(lo, hi) for lo, hi in zip([0] + bounds, bounds + [N])]


# ---- 1. one step composed of the separable steps equals torch ----------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_training_step_equals_torch(shape, dtype):
    x, dy, w, b, rm, rv = random_case(1, shape, dtype)
    ref = torch_step(x, dy, w, b, rm, rv, training=True)
    stats = F.batch_stats(x)  # mean and m2: test_combined_slice_stats_equal_the_whole
    assert stats.count == x.size // shape[1] and isinstance(stats.count, int)
    ours = bn1d_train_step(x, dy, w, b, rm, rv, pdtype=dtype)
    assert_step_equals((*ours, rm, rv), ref, TOL[dtype], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_eval_step_equals_torch(shape, dtype):
    """normalization_from_running + apply, and batch_statistics=False with the params' sums."""
    x, dy, w, b, rm, rv = random_case(2, shape, dtype)
    ref = torch_step(x, dy, w, b, rm, rv, training=False)
    ours = bn1d_eval_step(x, dy, w, b, rm, rv, pdtype=dtype)
    assert_step_equals(ours, ref[:4], TOL[dtype], dtype)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_input_with_float32_params_equals_torch_float64(dtype, shape, training):
    """The oracle: torch in float64 on the 16-bit values; 16-bit results one rounding off."""
    x32, dy32, w, b, rm, rv = random_case(3, shape, np.float32)
    x, dy = torch.from_numpy(x32).to(dtype), torch.from_numpy(dy32).to(dtype)
    ref = torch_step(x, dy, w, b, rm, rv, training)
    run = bn1d_train_step if training else bn1d_eval_step
    y, dx, dw, db = run(x, dy, w, b, rm, rv, pdtype="float32")
    for got, want in ((y, ref[0]), (dx, ref[1])):
        got = torch.from_dlpack(got) if dtype == torch.bfloat16 else torch.from_numpy(got)
        assert got.dtype == dtype
        assert _ulps(got, want).max() <= 1
    for got, want, what in zip((dw, db, rm, rv), ref[2:], NAMES[2:]):
        assert got.dtype == np.float32
        assert_close(got, want, 1e-6, what)


@pytest.mark.parametrize("dtype, name", [(n, n) for n in ("float32", "float64", "bfloat16",
                                                            "float16")]
                         + [(torch.bfloat16, "bfloat16"), (np.float16, "float16")])
def test_backward_params_in_each_dtype_round_torchs_once(dtype, name):
    x, dy, w, b, rm, rv = random_case(14, (9, 4, 3), np.float64)
    ref = torch_step(x, dy, np.ones(4), np.zeros(4), rm, rv, training=True)
    norm = F.normalization_from_batch(F.batch_stats(x), eps=EPS)
    dw, db = F.batch_norm_backward_params(F.backward_stats(dy, x, norm), norm, dtype)
    for got, want in ((dw, ref[2]), (db, ref[3])):
        assert got.dtype == name
        if name in ("bfloat16", "float16"):
            got = torch.from_dlpack(got) if name == "bfloat16" else torch.from_numpy(got)
            assert _ulps(got, want).max() <= 1
        else:
            assert_close(got, want, TOL[np.dtype(name).type], name)


@pytest.mark.parametrize("training", [True, False])
def test_weight_and_bias_none_are_one_and_zero(training):
    x, dy, _, _, rm, rv = random_case(16, (7, 2, 3), np.float64)
    xt = t64(x).requires_grad_()
    y = torch.nn.functional.batch_norm(xt, t64(rm), t64(rv), None, None, training, 0.1, EPS)
    y.backward(t64(dy))
    norm = (F.normalization_from_batch(F.batch_stats(x), EPS) if training
            else F.normalization_from_running(rm, rv, EPS))
    dx = F.batch_norm_backward_input(dy, x, norm, None, F.backward_stats(dy, x, norm), training)
    assert_close(F.batch_norm_apply(x, norm), y.detach(), 1e-12, "output")
    assert_close(dx, xt.grad, 1e-12, "grad_input")


# ---- 2. statistics of slices, combined ---------------------------------------------------------

BOUNDS = [[0, 3, 3, 4, 11], [5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]]


@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("shape", [(16, 3), (16, 4, 5)])
def test_combined_slice_stats_equal_the_whole(shape, bounds):
    """K disjoint slices (uneven, some empty) combined: count exact, mean and m2 to 1e-12 of the
    whole batch's (numpy float64), the same bits twice, another order the same to rounding."""
    x, dy, *_ = random_case(4, shape, np.float64)
    slices = slices_of(shape[0], bounds)
    parts = [F.batch_stats(x[s]) for s in slices]
    assert [p.count for p in parts] == [x[s].size // shape[1] for s in slices]
    whole = F.combine_stats(parts)
    n = x.size // shape[1]
    assert whole.count == n
    xd = np.moveaxis(x, 1, 0).reshape(shape[1], -1)
    assert_close(whole.mean, xd.mean(axis=1), 1e-12, "mean")
    assert_close(whole.m2, ((xd - xd.mean(axis=1, keepdims=True)) ** 2).sum(axis=1), 1e-12, "m2")
    direct = F.batch_stats(x)
    assert_close(whole.mean, direct.mean, 1e-12, "mean vs batch_stats")
    assert_close(whole.m2, direct.m2, 1e-12, "m2 vs batch_stats")
    again = F.combine_stats(list(parts))
    assert again.mean.tobytes() == whole.mean.tobytes() and again.m2.tobytes() == whole.m2.tobytes()
    reversed_ = F.combine_stats(parts[::-1])
    assert reversed_.count == n
    assert_close(reversed_.mean, whole.mean, 1e-14, "mean, reversed")
    assert_close(reversed_.m2, whole.m2, 1e-14, "m2, reversed")

    norm = F.normalization_from_batch(direct, eps=EPS)
    gparts = [F.backward_stats(dy[s], x[s], norm) for s in slices]
    gwhole = F.combine_grad_stats(gparts)
    assert gwhole.count == n
    dyd = np.moveaxis(dy, 1, 0).reshape(shape[1], -1)
    for got, terms in ((gwhole.sum_dy, dyd), (gwhole.sum_dy_xmu, dyd * (xd - norm.mean[:, None]))):
        # relative to the sum of |terms|: the sums cancel
        assert np.all(np.abs(got - terms.sum(axis=1)) <= 1e-13 * np.abs(terms).sum(axis=1))
    gagain = F.combine_grad_stats(gparts)
    assert gagain.sum_dy.tobytes() == gwhole.sum_dy.tobytes()
    assert gagain.sum_dy_xmu.tobytes() == gwhole.sum_dy_xmu.tobytes()


def distributed_step(x, dy, w, b, rm, rv, slices, pdtype, lengths=None):
    """What SyncBatchNorm does over len(slices) ranks, in one process: local stats, combined in
    order; per-slice apply; per-slice sums, combined, for the input gradient; the local sums'
    parameter gradients added over the slices."""
    valid = [{} if lengths is None else {"lengths": lengths[s]} for s in slices]
    stats = F.combine_stats([F.batch_stats(x[s], **v) for s, v in zip(slices, valid)])
    norm = F.normalization_from_batch(stats, eps=EPS)
    F.update_running_stats(rm, rv, stats, momentum=MOMENTUM)
    y = np.concatenate([F.batch_norm_apply(x[s], norm, w, b, **v) for s, v in zip(slices, valid)])
    local = [F.backward_stats(dy[s], x[s], norm, **v) for s, v in zip(slices, valid)]
    total = F.combine_grad_stats(local)
    dx = np.concatenate([F.batch_norm_backward_input(dy[s], x[s], norm, w, total, True, **v)
                         for s, v in zip(slices, valid)])
    params = [F.batch_norm_backward_params(sums, norm, dtype=pdtype) for sums in local]
    return y, dx, sum(p[0] for p in params), sum(p[1] for p in params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(16, 3), (16, 4, 5)])
def test_distributed_composition_equals_torch_on_the_whole_batch(shape, dtype):
    x, dy, w, b, rm, rv = random_case(5, shape, dtype)
    ref = torch_step(x, dy, w, b, rm, rv, training=True)
    slices = slices_of(shape[0], [0, 3, 3, 4, 11])
    ours = distributed_step(x, dy, w, b, rm, rv, slices, pdtype=dtype)
    assert_step_equals((*ours, rm, rv), ref, TOL[dtype], dtype)


def test_distributed_masked_composition_equals_torch_on_packed_values():
    x, dy, w, b, rm, rv = random_case(6, (10, 3, 6), np.float64)
    lengths = np.array([6, 0, 3, 1, 6, 2, 0, 5, 4, 6], dtype=np.int64)
    valid = torch.arange(6)[None, :] < torch.from_numpy(lengths)[:, None]
    ref = torch_step(packed(x, valid), packed(dy, valid), w, b, rm, rv, training=True)
    slices = slices_of(10, [1, 2, 2, 7])
    y, dx, dw, db = distributed_step(x, dy, w, b, rm, rv, slices, "float64", lengths)
    assert_close(packed(y, valid), ref[0], 1e-12, "y")
    assert_close(packed(dx, valid), ref[1], 1e-12, "grad_input")
    assert np.all(y.transpose(0, 2, 1)[~valid.numpy()] == 0)
    assert np.all(dx.transpose(0, 2, 1)[~valid.numpy()] == 0)
    for got, want, what in zip((dw, db, rm, rv), ref[2:], NAMES[2:]):
        assert_close(got, want, 1e-12, what)


# ---- 3. masked steps ----------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_mask", [False, True])
def test_masked_steps_equal_torch_on_packed_values(use_mask, dtype, training):
    x, dy, w, b, rm, rv = random_case(7, (5, 3, 7), dtype)
    rng = np.random.default_rng(8)
    if use_mask:
        mask = rng.random((5, 7)) < 0.5
        mask[0] = False
        positions, valid = {"mask": mask}, torch.from_numpy(mask)
    else:
        lengths = np.array([7, 0, 2, 5, 1])
        positions = {"lengths": lengths}
        valid = torch.arange(7)[None, :] < torch.from_numpy(lengths)[:, None]
    ref = torch_step(packed(x, valid), packed(dy, valid), w, b, rm, rv, training)
    if training:
        stats = F.batch_stats(x, **positions)
        assert stats.count == int(valid.sum())
    run = bn1d_train_step if training else bn1d_eval_step
    ours = run(x, dy, w, b, rm, rv, pdtype=dtype, **positions)
    for got, want, what in zip(ours[:2], ref[:2], ("output", "grad_input")):
        assert got.dtype == dtype and got.shape == x.shape
        assert_close(packed(got, valid), want, TOL[dtype], what)
        assert np.all(got.transpose(0, 2, 1)[~valid.numpy()] == 0), what
    for got, want, what in zip((*ours[2:], rm, rv), ref[2:], NAMES[2:]):
        assert_close(got, want, TOL[dtype], what)


# ---- 4. inputs: torch tensors without a copy, any layout, plain tuples -------------------------

def test_torch_tensors_give_numpys_results_and_running_stats_update_in_place():
    x, dy, w, b, rm, rv = random_case(9, (6, 3, 4), np.float32)
    ref = torch_step(x, dy, w, b, rm, rv, training=True)
    rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    tensors = [torch.from_numpy(a) for a in (x, dy, w)] + [torch.from_numpy(b).requires_grad_()]
    ours_t = bn1d_train_step(*tensors, rm_t, rv_t, pdtype=torch.float32)
    ours_np = bn1d_train_step(x, dy, w, b, rm, rv, pdtype=np.float32)
    for got_t, got_np in zip(ours_t, ours_np):
        assert isinstance(got_t, np.ndarray)
        assert got_t.tobytes() == got_np.tobytes()
    assert_close(rm_t, ref[4], 1e-6, "running_mean")
    assert_close(rv_t, ref[5], 1e-6, "running_var")
    assert torch.equal(rm_t, torch.from_numpy(rm)) and torch.equal(rv_t, torch.from_numpy(rv))
    # lengths and mask as torch tensors; a BFloat16Tensor output read back as an input
    lengths = torch.tensor([4, 0, 2, 3, 1, 4])
    assert F.batch_stats(x, lengths=lengths).count == 14
    assert F.batch_stats(x, mask=torch.arange(4)[None, :] < lengths[:, None]).count == 14
    x16 = torch.from_numpy(x).bfloat16()
    y16 = torch.from_dlpack(F.batch_norm_apply(x16, F.normalization_from_running(rm, rv)))
    y64 = y16.double().transpose(0, 1).reshape(3, -1)
    assert_close(F.batch_stats(y16).m2, y64.var(dim=1, unbiased=False) * 24, 1e-12, "m2")
    # statistics as float64 torch tensors, in plain tuples
    stats = F.batch_stats(x)
    as_tensors = (stats.count, torch.from_numpy(stats.mean), torch.from_numpy(stats.m2))
    norm = F.normalization_from_batch(as_tensors, eps=EPS)
    assert norm.invstd.tobytes() == F.normalization_from_batch(stats, eps=EPS).invstd.tobytes()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_running_stats_of_any_dtype_and_stride_update_in_the_tensors_memory(dtype):
    x, dy, w, b, *_ = random_case(15, (8, 3, 4), np.float64)
    ref = torch_step(x, dy, w, b, np.zeros(3), np.ones(3), training=True)
    buffers = torch.zeros(6, dtype=dtype), torch.ones(6, dtype=dtype)
    rm, rv = buffers[0][::2], buffers[1][::2]  # every other element of each buffer
    F.update_running_stats(rm, rv, F.batch_stats(x), momentum=MOMENTUM)
    for got, want in ((rm, ref[4]), (rv, ref[5])):
        if dtype == torch.float32:
            assert_close(got, want, 1e-6)
        else:
            assert _ulps(got, want).max() <= 1
    assert not buffers[0][1::2].any() and bool((buffers[1][1::2] == 1).all())


@pytest.mark.parametrize("layout", ["channels_last", "every_other_row", "channel_slice"])
def test_non_contiguous_inputs_equal_torch(layout):
    rng = np.random.default_rng(10)
    if layout == "channels_last":  # (N, L, C) memory viewed as (N, C, L)
        x, dy = (rng.standard_normal((6, 5, 3)).transpose(0, 2, 1) for _ in range(2))
    elif layout == "every_other_row":
        x, dy = (rng.standard_normal((12, 3, 5))[::2] for _ in range(2))
    else:
        x, dy = (rng.standard_normal((6, 7, 5))[:, 1:7:2] for _ in range(2))
    assert not x.flags.c_contiguous and not dy.flags.c_contiguous
    w_big = rng.uniform(0.5, 1.5, 6)
    w, b = w_big[::2], rng.standard_normal(3)  # a strided weight too
    rm, rv = np.zeros(3), np.ones(3)
    ref = torch_step(x, dy, w, b, rm, rv, training=True)
    ours = bn1d_train_step(x, dy, w, b, rm, rv, pdtype="float64")
    assert_step_equals((*ours, rm, rv), ref, 1e-12, np.float64)
    xt = torch.from_numpy(x)  # a non-contiguous tensor, read in place
    assert not xt.is_contiguous()
    assert F.batch_stats(xt).mean.tobytes() == F.batch_stats(x).mean.tobytes()


def test_plain_tuples_and_lists_replace_the_named_tuples():
    x, dy, w, b, *_ = random_case(11, (8, 3, 2), np.float64)
    stats = F.batch_stats(x)
    norm = F.normalization_from_batch(stats)
    sums = F.backward_stats(dy, x, norm)
    assert isinstance(stats, F.BatchStats) and isinstance(norm, F.Normalization)
    assert isinstance(sums, F.GradStats)
    assert stats._fields == ("count", "mean", "m2") and norm._fields == ("mean", "invstd")
    assert sums._fields == ("count", "sum_dy", "sum_dy_xmu")
    plain_norm = list(norm)
    plain_stats = (np.int64(stats.count), stats.mean, stats.m2)  # a numpy int count too
    plain_sums = tuple(sums)
    same = [
        (F.normalization_from_batch(plain_stats), norm),
        (F.combine_stats([plain_stats, list(stats)]), F.combine_stats([stats, stats])),
        (F.combine_grad_stats((plain_sums, plain_sums)), F.combine_grad_stats([sums, sums])),
        (F.batch_norm_apply(x, plain_norm, w, b), F.batch_norm_apply(x, norm, w, b)),
        (F.backward_stats(dy, x, plain_norm), sums),
        (F.batch_norm_backward_input(dy, x, plain_norm, w, plain_sums, True),
         F.batch_norm_backward_input(dy, x, norm, w, sums, True)),
        (F.batch_norm_backward_params(plain_sums, plain_norm, np.float64),
         F.batch_norm_backward_params(sums, norm, "float64")),
    ]
    for got, want in same:
        assert type(got) is type(want)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        for g, v in zip(got, want):
            assert np.asarray(g).tobytes() == np.asarray(v).tobytes()


# ---- 5. bad arguments: TypeError / ValueError naming them, nothing changed ----------------------

def _setup():
    x, dy, w, b, rm, rv = random_case(12, (4, 3, 5), np.float64)
    stats = F.batch_stats(x)
    norm = F.normalization_from_batch(stats)
    return x, dy, w, stats, norm, F.backward_stats(dy, x, norm), rm, rv


def test_wrong_types_for_stats_norm_and_parts():
    x, dy, w, stats, norm, sums, *_ = _setup()
    cases = [
        (lambda: F.normalization_from_batch("abc"), r"^stats: .*BatchStats.*got str"),
        (lambda: F.normalization_from_batch(stats.mean), r"^stats: .*BatchStats.*got ndarray"),
        (lambda: F.normalization_from_batch(stats[:2]), r"^stats: .*BatchStats.*got tuple"),
        (lambda: F.normalization_from_batch((3.0, *stats[1:])), r"^stats.count: .*int.*float"),
        (lambda: F.normalization_from_batch((True, *stats[1:])), r"^stats.count: .*int.*bool"),
        (lambda: F.normalization_from_batch((20, None, stats.m2)), r"^stats.mean: .*got None"),
        (lambda: F.batch_norm_apply(x, (*norm, norm.mean)), r"^norm: .*Normalization"),
        (lambda: F.batch_norm_apply(x, None), r"^norm: .*Normalization.*got None"),
        (lambda: F.backward_stats(dy, x, stats), r"^norm: .*Normalization.*got BatchStats"),
        (lambda: F.batch_norm_backward_input(dy, x, norm, w, sums[1:], True), r"^stats: .*Grad"),
        (lambda: F.batch_norm_backward_input(dy, x, norm, w, sums, 1), r"^batch_statistics: "),
        (lambda: F.batch_norm_backward_params((2.5, *sums[1:]), norm), r"^stats.count: "),
        (lambda: F.combine_stats(5), r"^parts: .*list.*got int"),
        (lambda: F.combine_stats(stats), r"^parts\[0\]: .*got int"),
        (lambda: F.combine_stats([stats, "x"]), r"^parts\[1\]: .*BatchStats.*got str"),
        (lambda: F.combine_grad_stats([sums, sums[:2]]), r"^parts\[1\]: .*GradStats"),
        (lambda: F.combine_grad_stats([(None, *sums[1:])]), r"^parts\[0\].count: .*None"),
        (lambda: F.batch_norm_backward_params(sums, norm, dtype=5), r"^dtype: .*got int"),
        (lambda: F.normalization_from_batch(stats, eps="0.1"), r"^eps: .*real.*str"),
        (lambda: F.update_running_stats(np.zeros(3), np.ones(3), stats, None), r"^momentum: "),
    ]
    for call, message in cases:
        with pytest.raises(TypeError, match=message):
            call()


def test_bad_values_name_the_argument():
    x, dy, w, stats, norm, sums, rm, rv = _setup()
    x4 = random_case(13, (4, 4, 5), np.float64)[0]
    s4 = F.batch_stats(x4)
    n4 = F.normalization_from_batch(s4)
    g4 = F.backward_stats(x4, x4, n4)
    cases = [  # channel mismatches between stats/norm and input or each other
        (lambda: F.batch_norm_apply(x, n4), r"norm.mean: .*shape \[3\].*shape \[4\]"),
        (lambda: F.backward_stats(dy, x, n4), r"norm.mean: .*shape \[3\].*shape \[4\]"),
        (lambda: F.batch_norm_backward_input(dy, x, n4, w, sums, True), r"norm.mean: "),
        (lambda: F.batch_norm_backward_input(dy, x, norm, w, g4, True), r"sum_dy: .*\[4\]"),
        (lambda: F.batch_norm_backward_params(g4, norm), r"stats sum_dy: .*\[3\].*\[4\]"),
        (lambda: F.combine_stats([stats, s4]), r"part 1 mean: .*\[3\].*\[4\]"),
        (lambda: F.combine_grad_stats([sums, g4]), r"part 1 sum_dy: .*\[3\].*\[4\]"),
        (lambda: F.normalization_from_batch((20, stats.mean, s4.m2)), r"stats m2: .*\[4\]"),
        (lambda: F.normalization_from_batch((20, stats.mean.astype(np.float32), stats.m2)),
         r"stats mean: .*float64.*float32"),
        (lambda: F.batch_norm_apply(x, norm, np.ones(4)), r"weight: .*\[3\].*\[4\]"),
        # counts, eps, dtype
        (lambda: F.normalization_from_batch((0, *stats[1:])), r"count 0"),
        (lambda: F.normalization_from_batch((-3, *stats[1:])), r"negative count -3"),
        (lambda: F.normalization_from_batch(stats, eps=-1.0), r"^eps: .*>= 0.*-1.0"),
        (lambda: F.normalization_from_batch(stats, eps=float("nan")), r"^eps: "),
        (lambda: F.normalization_from_running(rm, rv, eps=-1e-3), r"^eps: .*>= 0"),
        (lambda: F.normalization_from_running(rm, -rv, eps=1e-5), r"^running_var: "),
        (lambda: F.combine_stats([]), r"combine_stats: .*at least one part"),
        (lambda: F.combine_stats([(2**62, *stats[1:])] * 2), r"sum past the int64 range"),
        (lambda: F.combine_grad_stats([(2**62, *sums[1:])] * 2), r"sum past the int64 range"),
        (lambda: F.combine_stats([(2**63, *stats[1:])]), r"^parts\[0\].count: .*64-bit"),
        (lambda: F.normalization_from_batch((20, stats.mean, stats.m2 * np.nan)), r"m2"),
        (lambda: F.batch_norm_backward_input(dy, x, norm, w, (0, *sums[1:]), True), r"count 0"),
        (lambda: F.batch_stats(x, mask=np.ones((4, 6), bool)), r"^mask: .*\[4, 5\].*\[4, 6\]"),
        (lambda: F.combine_grad_stats([]), r"combine_grad_stats: .*at least one part"),
        (lambda: F.batch_norm_backward_params(sums, norm, "float8"),
         r"^dtype: .*float32, float64, bfloat16 or float16.*float8"),
        (lambda: F.batch_norm_backward_params(sums, norm, "int32"), r"^dtype: .*int32"),
        (lambda: F.backward_stats(dy[:2], x, norm), r"^grad_output: .*\[4, 3, 5\]"),
        (lambda: F.batch_stats(x, lengths=[5, 5, 5]), r"lengths"),
        (lambda: F.batch_stats(x[:, :, 0], lengths=[1] * 4), r"^lengths: .*\(N, C, L\)"),
        (lambda: F.batch_stats(x, lengths=[5] * 4, mask=np.ones((4, 5), bool)), r"both"),
    ]
    arrays = [x, dy, w, *stats[1:], *norm, *sums[1:]]
    before = [a.tobytes() for a in arrays]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert [a.tobytes() for a in arrays] == before
    # empty parts only: count 0 and zeros, which no normalization accepts
    empty = F.combine_stats([F.batch_stats(x[:0])] * 2)
    assert empty.count == 0 and not empty.mean.any() and not empty.m2.any()
    with pytest.raises(ValueError, match="count 0"):
        F.normalization_from_batch(empty)


def test_update_running_stats_errors_change_nothing():
    x, dy, w, stats, norm, sums, rm, rv = _setup()
    read_only = rv.copy()
    read_only.flags.writeable = False
    rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    before = rm.copy(), rv.copy()
    cases = [
        ((rm, rv, (1, *stats[1:]), 0.1), r"more than 1 value.*count 1"),
        ((rm, rv, (0, *stats[1:]), 0.1), r"count 0"),
        ((rm, rv, stats, -0.1), r"^momentum: .*\[0, 1\].*-0.1"),
        ((rm, rv, stats, 1.5), r"^momentum: .*\[0, 1\].*1.5"),
        ((rm, rv, stats, float("nan")), r"^momentum: "),
        ((rm, read_only, stats, 0.1), r"^running_var: .*writable"),
        ((read_only, rv, stats, 0.1), r"^running_mean: .*writable"),
        ((rm, np.ones(4), stats, 0.1), r"^running_var: .*\[3\].*\[4\]"),
        ((rm_t, rv_t[:2], stats, 0.1), r"^running_var: "),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            F.update_running_stats(*args)
        assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1])
        assert torch.equal(rm_t, torch.from_numpy(before[0]))
        assert torch.equal(rv_t, torch.from_numpy(before[1]))
    assert np.array_equal(read_only, before[1])
    # momentum 0 and 1 are the ends of the range: unchanged, and the observed statistics
    F.update_running_stats(rm, rv, stats, momentum=0)
    assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1])
    F.update_running_stats(rm, rv, stats, momentum=1)
    xd = np.moveaxis(x, 1, 0).reshape(3, -1)
    assert_close(rm, xd.mean(axis=1), 1e-12, "running_mean")
    assert_close(rv, xd.var(axis=1, ddof=1), 1e-12, "running_var")
