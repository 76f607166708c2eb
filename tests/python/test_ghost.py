# SPDX-License-Identifier: MIT
"""GhostBatchNorm1d (bn1d.GhostBatchNorm1d and bn1d.torch.GhostBatchNorm1d) against the loop it
replaces, run with torch.nn.BatchNorm1d (torch 1.13) as the oracle:

    split="chunk": torch.cat([bn(c) for c in x.chunk(ceil(N / virtual_batch_size))])
    split="fixed": the same over x.split(virtual_batch_size), a last chunk holding a single
                   value per channel merged into the one before it

outputs, running statistics, num_batches_tracked (exact), gradients of (y * g).sum() for the
input, weight and bias, over several training steps and then eval.

Accuracy: the oracle runs in float64 from the same values; a tensor's error is max |ours -
oracle| relative to max |oracle|: at most 1e-10 in float64, 1e-5 in float32. grad_input has an
absolute floor (1e-12 resp. 2**-20 times max|g| * max|w| * max invstd) for chunks of 2 values,
where it is ill-conditioned (test_module.py explains it).
"""

import io
import math
import pickle

import numpy as np
import pytest
import torch

import bn1d
import bn1d.torch as bt

TOL = {np.float32: 1e-5, np.float64: 1e-10}
GRAD_FLOOR = {np.float32: 2.0**-20, np.float64: 1e-12}


def assert_close(actual, expected, dtype, floor=0.0, what=""):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.max(np.abs(actual - expected), initial=0.0)
    scale = np.max(np.abs(expected), initial=0.0)
    assert err <= TOL[dtype] * scale + floor, f"{what}: error {err:.3g}, scale {scale:.3g}"


def oracle_chunks(x, virtual_batch_size, split):
    """The chunks the loop normalizes (torch.chunk, or x.split with the 1-value remainder
    merged)."""
    if split == "chunk":
        return x.chunk(math.ceil(x.shape[0] / virtual_batch_size))
    chunks = list(x.split(virtual_batch_size))
    values = 1 if x.dim() == 2 else x.shape[2]
    if len(chunks) > 1 and chunks[-1].shape[0] * values == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


def one_value_chunk(N, L, virtual_batch_size):
    """True when torch.chunk gives a chunk of a single value per channel."""
    return any(c.shape[0] * L == 1
               for c in torch.empty(N).chunk(math.ceil(N / virtual_batch_size)))


class Oracle:
    """The loop, with torch.nn.BatchNorm1d in float64."""

    def __init__(self, C, virtual_batch_size, split, **options):
        self.bn = torch.nn.BatchNorm1d(C, dtype=torch.float64, **options)
        self.virtual_batch_size, self.split = virtual_batch_size, split

    def step(self, x, g):
        """(output, grad_input, grad_weight, grad_bias, the grad_input floor scale)."""
        self.bn.zero_grad(set_to_none=True)
        xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
        batch_stats = self.bn.training or not self.bn.track_running_stats
        chunks = oracle_chunks(xt, self.virtual_batch_size, self.split) if batch_stats else [xt]
        y = torch.cat([self.bn(c) for c in chunks])
        gt = torch.tensor(np.asarray(g, dtype=np.float64))
        (y * gt).sum().backward()
        scale = 0.0
        if batch_stats:
            dims = [0] if xt.dim() == 2 else [0, 2]
            w = 1.0 if self.bn.weight is None else float(self.bn.weight.detach().abs().max())
            for c in chunks:
                var = c.detach().var(dim=dims, unbiased=False)
                scale = max(scale, w * float((1 / torch.sqrt(var + self.bn.eps)).max()))
            scale *= float(gt.abs().max())
        grads = [None if t is None else t.grad.numpy() for t in (self.bn.weight, self.bn.bias)]
        return y.detach().numpy(), xt.grad.numpy(), grads[0], grads[1], scale


def make_modules(rng, C, dtype, virtual_batch_size, split, affine, track, momentum):
    """(bn1d.GhostBatchNorm1d, bn1d.torch.GhostBatchNorm1d, Oracle) with the same random state."""
    options = dict(affine=affine, track_running_stats=track, momentum=momentum)
    ours = bn1d.GhostBatchNorm1d(C, virtual_batch_size, split=split, dtype=dtype, **options)
    adapter = bt.GhostBatchNorm1d(C, virtual_batch_size, split=split,
                                  dtype=torch.float64 if dtype == np.float64 else torch.float32,
                                  **options)
    oracle = Oracle(C, virtual_batch_size, split, **options)
    state = {}
    if affine:
        state["weight"] = (rng.random(C) + 0.5).astype(dtype)
        state["bias"] = rng.standard_normal(C).astype(dtype)
    if track:
        state["running_mean"] = rng.standard_normal(C).astype(dtype)
        state["running_var"] = (rng.random(C) + 0.5).astype(dtype)
        state["num_batches_tracked"] = np.asarray(2, np.int64)
    ours.load_state_dict(state)
    adapter.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    oracle.bn.load_state_dict({k: torch.from_numpy(v if v.dtype == np.int64
                                                   else v.astype(np.float64))
                               for k, v in state.items()})
    return ours, adapter, oracle


def check_state(module, oracle, dtype, what):
    state = {k: np.asarray(v.detach() if isinstance(v, torch.Tensor) else v)
             for k, v in module.state_dict().items()}
    expected = oracle.bn.state_dict()
    assert list(state) == list(expected), what
    for key in ("running_mean", "running_var"):
        if key in expected:
            assert_close(state[key], expected[key].numpy(), dtype, what=f"{what} {key}")
    if "num_batches_tracked" in expected:
        assert int(state["num_batches_tracked"]) == int(expected["num_batches_tracked"]), what


def run_case(seed, N, C, L, virtual_batch_size, split="chunk", momentum=0.01, dtype=np.float64,
             affine=True, track=True, train_steps=2, eval_steps=1):
    rng = np.random.default_rng(seed)
    ours, adapter, oracle = make_modules(rng, C, dtype, virtual_batch_size, split, affine,
                                         track, momentum)
    shape = (N, C) if L is None else (N, C, L)
    for step, mode in enumerate(["train"] * train_steps + ["eval"] * eval_steps):
        for m in (ours, adapter, oracle.bn):
            m.train(mode == "train")
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        what = f"seed {seed} N {N} vbs {virtual_batch_size} {split} step {step} ({mode})"
        y_ref, gx_ref, gw_ref, gb_ref, scale = oracle.step(x, g)
        y = ours(x)
        gx, gw, gb = ours.backward(g)
        xt = torch.from_numpy(x).requires_grad_(True)
        adapter.zero_grad(set_to_none=True)
        yt = adapter(xt)
        (yt * torch.from_numpy(g)).sum().backward()
        results = {"numpy": (y, gx, gw, gb),
                   "torch": (yt.detach().numpy(), xt.grad.numpy(),
                             None if adapter.weight is None else adapter.weight.grad.numpy(),
                             None if adapter.bias is None else adapter.bias.grad.numpy())}
        for name, (y_, gx_, gw_, gb_) in results.items():
            assert y_.dtype == dtype and gx_.dtype == dtype
            assert_close(y_, y_ref, dtype, what=f"{what} {name} output")
            assert_close(gx_, gx_ref, dtype, GRAD_FLOOR[dtype] * scale,
                         what=f"{what} {name} grad_input")
            if affine:
                assert_close(gw_, gw_ref, dtype, what=f"{what} {name} grad_weight")
                assert_close(gb_, gb_ref, dtype, what=f"{what} {name} grad_bias")
            else:
                assert gw_ is None and gb_ is None
        check_state(ours, oracle, dtype, what)
        check_state(adapter, oracle, dtype, what + " torch")
        if mode == "eval":
            assert_close(ours.infer(x), y_ref, dtype, what=f"{what} infer")


# ---- the loop, swept --------------------------------------------------------------------------

SIZES = [(2, 2), (3, 2), (7, 3), (10, 4), (64, 8), (100, 7), (129, 128), (255, 128),
         (1000, 128), (1024, 128), (513, 512), (600, 512), (5000, 512), (5000, 333), (777, 2),
         (37, 5), (4, 512), (250, 16)]


@pytest.mark.parametrize("N,virtual_batch_size", SIZES)
def test_chunk_split_equals_the_torch_chunk_loop(N, virtual_batch_size):
    rng = np.random.default_rng(N * 1000 + virtual_batch_size)
    L = [None, 1, 3][int(rng.integers(3))]
    if one_value_chunk(N, 1 if L is None else L, virtual_batch_size):
        L = 2
    dtype = (np.float64, np.float32)[int(rng.integers(2))]
    C = int(rng.integers(1, 6))
    momentum = [0.01, 0.1, None][int(rng.integers(3))]
    run_case(N + virtual_batch_size, N, C, L, virtual_batch_size, "chunk", momentum, dtype,
             affine=bool(rng.integers(3)), track=bool(rng.integers(3)))


@pytest.mark.parametrize("seed", range(12))
def test_random_sizes_equal_the_loop(seed):
    """N log-uniform in [2, 5000], virtual_batch_size in [2, 512] (at most 600 chunks, to keep
    torch's loop quick), either split."""
    rng = np.random.default_rng(4000 + seed)
    while True:
        N = int(np.exp(rng.uniform(np.log(2), np.log(5000))))
        virtual_batch_size = int(np.exp(rng.uniform(np.log(2), np.log(512))))
        if N / virtual_batch_size <= 600:
            break
    split = ("chunk", "fixed")[seed % 2]
    L = None if seed % 3 else 2
    if split == "chunk" and one_value_chunk(N, 1 if L is None else L, virtual_batch_size):
        L = 2
    run_case(seed, N, int(rng.integers(1, 5)), L, virtual_batch_size, split,
             [0.01, 0.02, None][seed % 3], (np.float64, np.float32)[seed // 6])


def test_tabnet_defaults():
    # TabNet: GBN(virtual_batch_size=128, momentum=0.02), batches of 1024 (N, C) rows
    run_case(11, 1024, 16, None, 128, "chunk", 0.02, np.float32, train_steps=3, eval_steps=2)
    run_case(12, 1000, 8, None, 128, "chunk", 0.02, np.float64, train_steps=2)


@pytest.mark.parametrize("N,virtual_batch_size,L", [(9, 4, None), (9, 4, 1), (9, 4, 2),
                                                    (8, 4, None), (5, 2, None), (300, 128, None),
                                                    (257, 128, 3), (3, 5, None), (2, 1, None)])
def test_fixed_split_equals_the_split_loop(N, virtual_batch_size, L):
    run_case(N * 7 + virtual_batch_size, N, 3, L, virtual_batch_size, "fixed", 0.1,
             np.float64, train_steps=2)


def test_without_running_statistics_eval_uses_each_chunks_statistics():
    run_case(3, 50, 4, None, 16, "chunk", 0.1, np.float64, track=False, train_steps=1,
             eval_steps=2)


# ---- errors ------------------------------------------------------------------------------------

def test_one_value_chunk_is_torchs_error_and_changes_nothing():
    x = np.random.default_rng(0).standard_normal((5, 3))  # chunk(5, 3) -> 2, 2, 1 rows
    m = bn1d.GhostBatchNorm1d(3, virtual_batch_size=2, dtype="float64")
    before = {k: np.array(v, copy=True) for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        m(x)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    t = bt.GhostBatchNorm1d(3, virtual_batch_size=2, dtype=torch.float64)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        t(torch.from_numpy(x))
    assert int(t.num_batches_tracked) == 0 and torch.equal(t.running_mean, torch.zeros(3))
    # torch's loop raises the same error (after updating the statistics with two chunks)
    bn = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        [bn(c) for c in torch.from_numpy(x).chunk(3)]
    # the "fixed" split merges such a remainder; eval mode normalizes one row
    bn1d.GhostBatchNorm1d(3, virtual_batch_size=2, split="fixed", dtype="float64")(x)
    m.eval()
    m(x[:1])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(split="block"), ValueError, "^split"),
    (dict(split=1), TypeError, "^split"),
    (dict(virtual_batch_size=0), ValueError, "virtual_batch_size"),
    (dict(virtual_batch_size=2.0), TypeError, "^virtual_batch_size"),
    (dict(momentum=2.0), ValueError, "momentum"),
])
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        bn1d.GhostBatchNorm1d(4, **kwargs)
    with pytest.raises(error, match=match):
        bt.GhostBatchNorm1d(4, **kwargs)


def test_bad_input_dims():
    with pytest.raises(ValueError):
        bn1d.GhostBatchNorm1d(4)(np.ones((2, 4, 3, 1), np.float32))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        bt.GhostBatchNorm1d(4)(torch.ones(2, 4, 3, 1))


# ---- the module's surface --------------------------------------------------------------------

def trained_ghost(**kwargs):
    m = bn1d.GhostBatchNorm1d(3, virtual_batch_size=4, dtype="float64", **kwargs)
    m(np.random.default_rng(1).standard_normal((10, 3)))
    return m


def test_options_repr_and_chunk_bounds():
    m = bn1d.GhostBatchNorm1d(64)
    assert (m.virtual_batch_size, m.split, m.momentum, m.eps) == (128, "chunk", 0.01, 1e-05)
    assert repr(m) == ("GhostBatchNorm1d(64, virtual_batch_size=128, split='chunk', eps=1e-05, "
                       "momentum=0.01, affine=True, track_running_stats=True)")
    assert m.chunk_bounds(10) == [0, 10]
    m = bn1d.GhostBatchNorm1d(2, virtual_batch_size=4)
    assert m.chunk_bounds(10) == [0, 4, 8, 10]  # torch.chunk(10, 3): 4, 4, 2
    assert m.chunk_bounds(9) == [0, 3, 6, 9]    # torch.chunk(9, 3): 3, 3, 3
    fixed = bn1d.GhostBatchNorm1d(2, virtual_batch_size=4, split="fixed")
    assert fixed.chunk_bounds(9) == [0, 4, 9] and fixed.chunk_bounds(9, 2) == [0, 4, 8, 9]
    with pytest.raises(AttributeError):
        m.virtual_batch_size = 3
    with pytest.raises(AttributeError):
        m.split = "fixed"
    assert "virtual_batch_size=128, split='chunk'" in repr(bt.GhostBatchNorm1d(64))


def test_state_dict_pickle_and_files(tmp_path):
    m = trained_ghost(momentum=None)
    assert list(m.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                    "num_batches_tracked"]
    assert int(m.num_batches_tracked) == 3
    copy = pickle.loads(pickle.dumps(m))
    assert type(copy) is bn1d.GhostBatchNorm1d and repr(copy) == repr(m)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(copy.state_dict()[k], v)
    path = tmp_path / "ghost.safetensors"
    m.save(path)
    loaded = bn1d.GhostBatchNorm1d(3, virtual_batch_size=4, dtype="float64")
    loaded.load(path)
    np.testing.assert_array_equal(loaded.running_var, m.running_var)
    assert loaded.num_batches_tracked == 3
    m.eps = 1e-3  # eps and momentum stay live, as BatchNorm1d's
    assert m.eps == 1e-3 and m.virtual_batch_size == 4 and m.num_batches_tracked == 3


def test_torch_module_state_dict_is_batchnorm1ds_and_loads_tabnet_gbn():
    class GBN(torch.nn.Module):  # TabNet's (pytorch_tabnet.tab_network.GBN)
        def __init__(self, input_dim, virtual_batch_size=128, momentum=0.01):
            super().__init__()
            self.virtual_batch_size = virtual_batch_size
            self.bn = torch.nn.BatchNorm1d(input_dim, momentum=momentum)

        def forward(self, x):
            chunks = x.chunk(int(np.ceil(x.shape[0] / self.virtual_batch_size)), 0)
            return torch.cat([self.bn(x_) for x_ in chunks], dim=0)

    torch.manual_seed(0)
    tabnet = torch.nn.Sequential(torch.nn.Linear(5, 6), GBN(6, 16, 0.02))
    ours = torch.nn.Sequential(torch.nn.Linear(5, 6), bt.GhostBatchNorm1d(6, 16, 0.02))
    assert list(ours[1].state_dict()) == list(torch.nn.BatchNorm1d(6).state_dict())
    with torch.no_grad():
        tabnet[1].bn.weight.uniform_(0.5, 1.5)
        for _ in range(2):
            tabnet(torch.randn(100, 5))
    buffer = io.BytesIO()
    torch.save(tabnet.state_dict(), buffer)
    buffer.seek(0)
    ours.load_state_dict(torch.load(buffer))  # strict: keys "1.bn.weight", ... load as ours
    assert int(ours[1].num_batches_tracked) == 14
    x = torch.randn(40, 5)
    for mode in (True, False):
        tabnet.train(mode), ours.train(mode)
        torch.testing.assert_close(ours(x), tabnet(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1].running_var, tabnet[1].bn.running_var)
    ours.load_state_dict(ours.state_dict())  # and its own keys
    assert isinstance(ours[1].weight, torch.nn.Parameter)
    assert [n for n, _ in ours[1].named_buffers()] == ["running_mean", "running_var",
                                                       "num_batches_tracked"]


def test_copying_saved_tensor_hooks_are_a_clear_error():
    """The ghost step's backward state is owned by a saved tensor: hooks that copy the saved
    tensors lose it, which backward reports instead of crashing."""
    m = bt.GhostBatchNorm1d(3, virtual_batch_size=4)
    x = torch.randn(8, 3, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
        y = m(x)
    with pytest.raises(RuntimeError, match="saved-tensor hook"):
        y.sum().backward()
