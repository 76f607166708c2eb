# SPDX-License-Identifier: MIT
"""bn1d.torch.to_torch / from_torch: a bn1d.BatchNorm1d's options and state into a torch module
and back, checked against torch.nn.BatchNorm1d (torch 1.13): the same state, and outputs that
match torch's on the same input.
"""

import copy

import numpy as np
import pytest
import torch

import bn1d
import bn1d.torch as bt

OPTIONS = [dict(), dict(momentum=None), dict(affine=False), dict(track_running_stats=False),
           dict(affine=False, track_running_stats=False), dict(eps=1e-3, momentum=0.5)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def trained_torch_module(kw, dtype, training, seed=0):
    """A torch.nn.BatchNorm1d(4) with random parameters after three training steps, in the
    given mode."""
    g = torch.Generator().manual_seed(seed)
    m = torch.nn.BatchNorm1d(4, dtype=dtype, **kw)
    with torch.no_grad():
        if m.affine:
            m.weight.copy_(torch.rand(4, generator=g, dtype=dtype) + 0.5)
            m.bias.copy_(torch.randn(4, generator=g, dtype=dtype))
    for _ in range(3):
        m(torch.randn(8, 4, 3, generator=g, dtype=dtype) * 2 + 1)
    return m.train(training)


def assert_same_options(bn, t):
    for name in ("num_features", "eps", "momentum", "affine", "track_running_stats",
                 "training"):
        assert getattr(bn, name) == getattr(t, name), name
    assert (bn.momentum is None) == (t.momentum is None)


def assert_same_state(bn, t):
    """The state of the bn1d module bn is exactly that of the torch module t."""
    ours, theirs = bn.state_dict(), t.state_dict()
    assert list(ours) == list(theirs)
    for k, v in theirs.items():
        assert ours[k].dtype == v.numpy().dtype, k
        np.testing.assert_array_equal(ours[k], v.numpy(), err_msg=k)


def step(m, x):
    """One forward in m's mode (a bn1d or a torch module), its output as a torch tensor."""
    y = m(x) if isinstance(m, torch.nn.Module) else torch.from_numpy(m(x.numpy()))
    return y.detach()


@pytest.mark.parametrize("kw", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [True, False])
def test_torch_to_bn1d_to_torch(kw, dtype, training):
    oracle = trained_torch_module(kw, dtype, training)
    snapshot = copy.deepcopy(oracle.state_dict())
    # A module without parameters and buffers has no dtype to read: it is given.
    bn = bt.from_torch(oracle, dtype=None if snapshot else dtype)
    assert type(bn) is bn1d.BatchNorm1d and bn.dtype == np.dtype(str(dtype)[6:])
    assert_same_options(bn, oracle)
    assert_same_state(bn, oracle)
    back = bt.to_torch(bn)
    assert type(back) is bt.BatchNorm1d
    assert all(p.dtype == dtype for p in back.parameters())
    assert_same_options(back, oracle)
    for k, v in oracle.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
        assert torch.equal(snapshot[k], v), k  # the source is not changed

    # Two forwards on each: the outputs and the state they leave are torch's.
    torch_again = bt.revert(copy.deepcopy(back))
    assert type(torch_again) is torch.nn.BatchNorm1d
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(6, 4, 5, generator=g, dtype=dtype) * 3 - 1
        expected = step(oracle, x)
        assert torch.equal(step(torch_again, x), expected)  # the same state, exactly
        for m in (bn, back):
            torch.testing.assert_close(step(m, x), expected, **TOL[dtype])
    for k, v in oracle.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(bn.state_dict()[k]), v, **TOL[dtype])
        torch.testing.assert_close(back.state_dict()[k], v, **TOL[dtype])
        assert torch.equal(torch_again.state_dict()[k], v), k


@pytest.mark.parametrize("kw", OPTIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bn1d_trained_then_to_torch(kw, dtype):
    """bn1d trains (forward and backward), the same steps as torch; to_torch carries the result,
    and torch's module then continues as torch would."""
    tdtype = getattr(torch, dtype)
    bn = bn1d.BatchNorm1d(4, dtype=dtype, **kw)
    oracle = torch.nn.BatchNorm1d(4, dtype=tdtype, **kw)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(5, 4, generator=g, dtype=tdtype) * 2 + 0.5
        bn(x.numpy())
        oracle(x)
    bn.eval()
    oracle.eval()
    t = bt.to_torch(bn)
    assert_same_options(t, oracle)
    assert not t.training and t.momentum == oracle.momentum
    for k, v in oracle.state_dict().items():
        assert t.state_dict()[k].dtype == v.dtype, k
        torch.testing.assert_close(t.state_dict()[k], v, **TOL[tdtype])
    x = torch.randn(7, 4, 2, generator=g, dtype=tdtype)
    torch.testing.assert_close(step(t, x), step(oracle, x), **TOL[tdtype])
    torch.testing.assert_close(step(bn, x), step(oracle, x), **TOL[tdtype])


def test_copies_are_independent():
    bn = bn1d.BatchNorm1d(3)
    t = bt.to_torch(bn)
    with torch.no_grad():
        t.weight.fill_(5)
        t.running_mean.fill_(2)
    t.num_batches_tracked.fill_(9)
    assert np.all(bn.weight == 1) and np.all(bn.running_mean == 0) and bn.num_batches_tracked == 0
    back = bt.from_torch(t)
    back.weight[...] = 7
    back.running_var[...] = 3
    assert torch.all(t.weight == 5) and torch.all(t.running_var == 1)
    assert back.num_batches_tracked == 9
    assert isinstance(t.weight, torch.nn.Parameter) and t.weight.requires_grad


def test_from_torch_takes_subclasses_and_bn1d_torch_modules():
    class Mine(torch.nn.BatchNorm1d):
        pass

    for cls in (Mine, bt.BatchNorm1d):
        m = cls(3, momentum=None).double().eval()
        bn = bt.from_torch(m)
        assert bn.dtype == np.float64 and bn.momentum is None and not bn.training


def test_dtype_of_a_module_without_state():
    bn = bn1d.BatchNorm1d(3, affine=False, track_running_stats=False, dtype="float64")
    t = bt.to_torch(bn)
    assert list(t.state_dict()) == []
    assert bt.from_torch(t).dtype == np.float32  # nothing says float64: the default
    for dtype in ("float64", torch.float64):
        assert bt.from_torch(t, dtype=dtype).dtype == np.float64
    assert bt.from_torch(torch.nn.BatchNorm1d(3).double(), dtype="float64").dtype == np.float64


def test_from_torch_wrong_module_types():
    for bad in (torch.nn.Linear(3, 3), torch.nn.BatchNorm2d(3), torch.nn.LazyBatchNorm1d(),
                bn1d.BatchNorm1d(3), None, "BatchNorm1d"):
        with pytest.raises(TypeError, match="module: expected a torch.nn.BatchNorm1d"):
            bt.from_torch(bad)


def test_to_torch_wrong_module_types():
    for bad in (torch.nn.BatchNorm1d(3), bt.BatchNorm1d(3), None, 3):
        with pytest.raises(TypeError, match="module: expected a bn1d.BatchNorm1d, got"):
            bt.to_torch(bad)
    with pytest.raises(TypeError, match="torch.nn.modules.batchnorm.BatchNorm1d"):
        bt.to_torch(torch.nn.BatchNorm1d(3))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_from_torch_unsupported_dtypes(dtype):
    m = torch.nn.BatchNorm1d(3).to(dtype)
    with pytest.raises(ValueError, match=f"module.weight: expected dtype float32, float64, "
                                         f"bfloat16 or float16, got {str(dtype)[6:]}"):
        bt.from_torch(m)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_from_torch_and_to_torch_16bit_modules(dtype):
    """A torch 16-bit module becomes a pure 16-bit bn1d module with the same bits, and back."""
    t = torch.nn.BatchNorm1d(3).to(dtype)
    with torch.no_grad():
        t.weight.copy_(torch.tensor([0.1, -2.5, 3.3]))
    if dtype == torch.bfloat16:  # torch 1.13 has no float16 batch norm on the CPU
        t(torch.randn(5, 3).to(dtype))
    m = bt.from_torch(t)
    assert str(m.dtype) == str(dtype)[6:]
    back = bt.to_torch(m)
    for key, value in t.state_dict().items():
        assert back.state_dict()[key].dtype == value.dtype
        assert torch.equal(back.state_dict()[key], value), key


def test_from_torch_inconsistent_modules():
    mixed = torch.nn.BatchNorm1d(3)
    mixed.running_var = mixed.running_var.double()
    with pytest.raises(ValueError, match="module.running_var: expected dtype float32 "
                                         r"\(the module's\), got float64"):
        bt.from_torch(mixed)
    with pytest.raises(ValueError, match="module.weight: expected dtype float64"):
        bt.from_torch(torch.nn.BatchNorm1d(3), dtype=torch.float64)
    no_bias = torch.nn.BatchNorm1d(3)
    no_bias.bias = None
    with pytest.raises(ValueError, match=r"module.bias: expected a tensor \(affine=True\), "
                                         "got None"):
        bt.from_torch(no_bias)
    no_count = torch.nn.BatchNorm1d(3)
    no_count.num_batches_tracked = None
    with pytest.raises(ValueError, match="module.num_batches_tracked: expected a tensor"):
        bt.from_torch(no_count)
    extra = torch.nn.BatchNorm1d(3, affine=False)
    extra.weight = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"module.weight: expected None \(affine=False\)"):
        bt.from_torch(extra)
    wrong_size = torch.nn.BatchNorm1d(3)
    wrong_size.running_mean = torch.zeros(4)
    with pytest.raises(ValueError, match="running_mean"):
        bt.from_torch(wrong_size)
    with pytest.raises(ValueError, match="module.weight: expected a tensor with data, got a meta"):
        bt.from_torch(torch.nn.BatchNorm1d(3, device="meta"))


def test_from_torch_bad_dtype_argument():
    with pytest.raises(ValueError, match="dtype: expected float32, float64, bfloat16 or float16, "
                                         "got int64"):
        bt.from_torch(torch.nn.BatchNorm1d(3), dtype="int64")
    with pytest.raises(ValueError, match="dtype: expected float32, float64, bfloat16 or float16, "
                                         "got complex64"):
        bt.from_torch(torch.nn.BatchNorm1d(3), dtype=torch.complex64)
    # A 16-bit dtype is never a conversion: float32 parameters are not a float16 module's.
    with pytest.raises(ValueError, match="module.weight: expected dtype float16"):
        bt.from_torch(torch.nn.BatchNorm1d(3), dtype=torch.float16)
    with pytest.raises(TypeError, match="dtype: expected a str or a torch.dtype, got int"):
        bt.from_torch(torch.nn.BatchNorm1d(3), dtype=3)
