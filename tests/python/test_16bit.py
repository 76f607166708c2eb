# SPDX-License-Identifier: MIT
"""bn1d.BatchNorm1d with 16-bit floats: float16 numpy arrays and bfloat16 through DLPack
(bn1d.BFloat16Tensor), in the mixed (float32 module, 16-bit input) and pure (16-bit module)
configurations. Values are checked against torch 1.13 computing in float64 on the same 16-bit
inputs and parameters, rounded once to the 16-bit dtype (bn1d's claim: within 1 ulp of it)."""

import copy
import pickle

import numpy as np
import pytest
import torch

import bn1d

C = 3


def _ordered(bits):
    """16-bit float bits (int array) mapped to integers in the order of their values."""
    bits = np.asarray(bits, np.int64) & 0xFFFF
    return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)


def ulps(got, want):
    """The distance in units in the last place between two torch 16-bit tensors (same dtype)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    g = got.contiguous().view(torch.int16).numpy()
    w = want.contiguous().view(torch.int16).numpy()
    return np.abs(_ordered(g) - _ordered(w))


def oracle(x, weight=None, bias=None, training=True, mean=None, var=None, eps=1e-5):
    """torch float64 batch norm of the 16-bit tensor x with the given parameters (any dtype)."""
    d = (lambda t: None if t is None else t.detach().double().clone())
    return torch.nn.functional.batch_norm(x.double(), d(mean), d(var), d(weight), d(bias),
                                          training, 0.1, eps)


def test_dtype_forms_16bit():
    for form, name in ((np.float16, "float16"), ("float16", "float16"), (torch.float16, "float16"),
                       ("bfloat16", "bfloat16"), (torch.bfloat16, "bfloat16")):
        m = bn1d.BatchNorm1d(C, dtype=form)
        assert str(m.dtype) == name
        assert m._m.dtype == name
    assert bn1d.BatchNorm1d(C, dtype="float16").dtype == np.dtype(np.float16)
    assert bn1d.BatchNorm1d(C, dtype="bfloat16").dtype == "bfloat16"


def test_mixed_float16_numpy():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, C, 5)) * 3 + 1).astype(np.float16)
    m = bn1d.BatchNorm1d(C)
    m.weight = np.array([0.5, 2.0, -1.25], np.float32)
    y = m(x)
    assert y.dtype == np.float16 and y.shape == x.shape
    want = oracle(torch.from_numpy(x), torch.from_numpy(m.weight.copy()))
    assert ulps(torch.from_numpy(y), want.half()).max() <= 1
    assert m.running_mean.dtype == np.float32
    np.testing.assert_allclose(m.running_mean, 0.1 * x.astype(np.float64).mean(axis=(0, 2)),
                               rtol=1e-6, atol=1e-7)
    gy = rng.standard_normal(x.shape).astype(np.float16)
    gx, gw, gb = m.backward(gy)
    assert gx.dtype == np.float16 and gw.dtype == gb.dtype == np.float32
    xt = torch.from_numpy(x).double().requires_grad_()
    w = torch.from_numpy(m.weight.copy()).double().requires_grad_()
    b = torch.zeros(C, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.batch_norm(xt, None, None, w, b, True).backward(
        torch.from_numpy(gy).double())
    assert ulps(torch.from_numpy(gx), xt.grad.half()).max() <= 1
    np.testing.assert_allclose(gw, w.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_pure_float16_numpy_params_are_float16_views():
    m = bn1d.BatchNorm1d(C, dtype="float16")
    assert m.weight.dtype == m.running_var.dtype == np.float16
    m.weight = np.array([0.1, 2, 3])  # rounded once to float16
    assert m.weight.tolist() == np.array([0.1, 2, 3], np.float16).tolist()
    x = np.random.default_rng(1).standard_normal((8, C)).astype(np.float16)
    y = m(x)
    assert y.dtype == np.float16
    want = oracle(torch.from_numpy(x), torch.from_numpy(m.weight.copy()))
    assert ulps(torch.from_numpy(y), want.half()).max() <= 1
    with pytest.raises(ValueError, match="expected a float16 input .*got float32"):
        m(x.astype(np.float32))


def test_bfloat16_input_is_read_without_copy_and_returned_as_bfloat16_tensor():
    x = torch.randn(10, C, 4).bfloat16()
    m = bn1d.BatchNorm1d(C)
    y = m(x)
    assert isinstance(y, bn1d.BFloat16Tensor)
    assert y.shape == (10, C, 4) and y.ndim == 3 and y.dtype == "bfloat16"
    t = torch.from_dlpack(y)
    assert t.dtype == torch.bfloat16 and t.shape == x.shape
    assert torch.from_dlpack(y).data_ptr() == t.data_ptr()  # the same memory, no copy
    assert ulps(t, oracle(x).bfloat16()).max() <= 1
    wide = y.numpy()
    assert wide.dtype == np.float32 and np.array_equal(wide, t.float().numpy())
    assert np.array_equal(np.asarray(y), wide)
    assert np.asarray(y, dtype=np.float64).dtype == np.float64
    gx, gw, gb = m.backward(torch.ones_like(x))
    assert isinstance(gx, bn1d.BFloat16Tensor) and gw.dtype == np.float32


def test_bfloat16_input_is_a_view_not_a_copy():
    """forward keeps a view of the torch tensor's memory for backward: changing the tensor in
    place between forward and backward changes the gradients (a copy would not see it)."""
    x = torch.randn(10, C).bfloat16()
    gy = torch.randn(10, C).bfloat16()
    kept, changed = bn1d.BatchNorm1d(C), bn1d.BatchNorm1d(C)
    kept(x.clone())
    changed(x)
    x.mul_(-3)
    assert not torch.equal(torch.from_dlpack(kept.backward(gy)[0]),
                           torch.from_dlpack(changed.backward(gy)[0]))


class _DLPackOnly:
    """Any producer of DLPack capsules (here one that forwards a torch tensor's)."""

    def __init__(self, t):
        self.t = t

    def __dlpack__(self, stream=None):
        return self.t.__dlpack__()

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


def test_any_dlpack_bfloat16_producer_and_expanded_views():
    x = torch.randn(6, C, 4).bfloat16()
    want = torch.from_dlpack(bn1d.BatchNorm1d(C)(x))
    assert torch.equal(torch.from_dlpack(bn1d.BatchNorm1d(C)(_DLPackOnly(x))), want)
    expanded = torch.randn(1, C, 1).bfloat16().expand(6, C, 4)  # stride 0: one value per channel
    assert torch.equal(torch.from_dlpack(bn1d.BatchNorm1d(C)(expanded)),
                       torch.zeros(6, C, 4, dtype=torch.bfloat16))


def test_bfloat16_strided_and_channels_last_views():
    base = torch.randn(6, C, 8).bfloat16()
    for x in (base[:, :, ::2], base.transpose(0, 2).contiguous().transpose(0, 2), base[::2, :, 1]):
        m = bn1d.BatchNorm1d(C)
        y = torch.from_dlpack(m(x))
        assert ulps(y, oracle(x).bfloat16()).max() <= 1


def test_pure_bfloat16_parameters_read_and_write():
    m = bn1d.BatchNorm1d(C, dtype=torch.bfloat16)
    assert isinstance(m.weight, bn1d.BFloat16Tensor)
    assert m.weight.numpy().tolist() == [1.0] * C
    m.weight = torch.tensor([1.5, -2.0, 0.3], dtype=torch.bfloat16)  # bit for bit
    assert torch.equal(torch.from_dlpack(m.weight),
                       torch.tensor([1.5, -2.0, 0.3], dtype=torch.bfloat16))
    m.bias = np.array([0.1, 0.2, 1 / 3])  # rounded once (torch rounds to nearest even too)
    assert torch.equal(torch.from_dlpack(m.bias),
                       torch.tensor([0.1, 0.2, 1 / 3], dtype=torch.float64).bfloat16())
    torch.from_dlpack(m.running_mean)[1] = 5.0  # a view of the module's storage
    assert m.running_mean.numpy()[1] == 5.0
    with pytest.raises(ValueError, match=r"weight: expected shape \[3\], got \[2\]"):
        m.weight = torch.ones(2, dtype=torch.bfloat16)
    x = torch.randn(12, C).bfloat16()
    y = torch.from_dlpack(m(x))
    want = oracle(x, torch.from_dlpack(m.weight), torch.from_dlpack(m.bias))
    assert ulps(y, want.bfloat16()).max() <= 1
    with pytest.raises(ValueError, match="expected a bfloat16 input .*got float32"):
        m(x.float())


def test_pure_bfloat16_state_dict_pickle_and_torch_round_trip():
    m = bn1d.BatchNorm1d(C, dtype="bfloat16")
    m.weight = np.array([0.5, 1.5, 2.5])
    m(torch.randn(7, C).bfloat16())
    state = m.state_dict()
    assert isinstance(state["running_var"], bn1d.BFloat16Tensor)
    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        for key in ("weight", "bias", "running_mean", "running_var"):
            assert np.array_equal(getattr(other, key).bits(), getattr(m, key).bits())
        assert other.num_batches_tracked == 1
    # torch's own bfloat16 module loads it, and bn1d loads torch's state back.
    t = torch.nn.BatchNorm1d(C).bfloat16()
    t.load_state_dict({k: torch.from_dlpack(v) if isinstance(v, bn1d.BFloat16Tensor)
                       else torch.from_numpy(v) for k, v in state.items()})
    assert torch.equal(t.running_mean, torch.from_dlpack(m.running_mean))
    n = bn1d.BatchNorm1d(C, dtype="bfloat16")
    n.load_state_dict(t.state_dict())
    assert np.array_equal(n.running_var.bits(), m.running_var.bits())
    with pytest.raises(ValueError, match="dtype mismatch for weight"):
        n.load_state_dict(torch.nn.BatchNorm1d(C).state_dict())


def test_bfloat16_tensor_bits_and_errors():
    t = bn1d.BFloat16Tensor.from_bits(np.array([0x3F80, 0xC000, 0x7F80], np.uint16))
    assert t.numpy().tolist() == [1.0, -2.0, float("inf")]
    assert t.bits().tolist() == [0x3F80, 0xC000, 0x7F80]
    with pytest.raises(ValueError, match="input: expected dtype bfloat16 through __dlpack__, "
                                         "got float32"):
        bn1d.BFloat16Tensor.from_dlpack(torch.ones(2))
    with pytest.raises(ValueError, match="stream"):
        t.__dlpack__(stream=1)
    assert t.__dlpack_device__() == (1, 0)


def test_bad_16bit_combinations_change_nothing():
    m = bn1d.BatchNorm1d(C, dtype="float16")
    with pytest.raises(ValueError, match="expected a float16 input .*got bfloat16"):
        m(torch.ones(4, C, dtype=torch.bfloat16))
    assert m.num_batches_tracked == 0
    with pytest.raises(ValueError, match="expected dtype float32, float64, bfloat16 or float16, "
                                         "got int32"):
        bn1d.BatchNorm1d(C)(np.ones((4, C), np.int32))


def test_pure_bfloat16_state_saves_as_bf16(tmp_path):
    """save_file writes a BFloat16Tensor as BF16 (from its bits): torch's bfloat16 module loads
    the file's values back exactly, and the module's own save/load round-trips."""
    m = bn1d.BatchNorm1d(C, dtype="bfloat16")
    m.weight = np.array([0.1, -3.0, 7.5])
    path = str(tmp_path / "bf16.safetensors")
    bn1d.save_file(m.state_dict(), path)
    loaded = bn1d.load_file(path)  # BF16 widened exactly to float32
    assert torch.equal(torch.from_numpy(loaded["weight"]).bfloat16(),
                       torch.from_dlpack(m.weight))
    m.save(path)
    n = bn1d.BatchNorm1d(C, dtype="bfloat16")
    n.load(path)
    assert np.array_equal(n.weight.bits(), m.weight.bits())


def test_reexported_view_of_imported_memory_keeps_it_alive():
    # A torch tensor made from a BFloat16Tensor that views another torch tensor's memory keeps
    # that memory alive after both the original and the BFloat16Tensor are gone.
    a = torch.full((512, 256), 1.5).bfloat16()
    view = bn1d.BFloat16Tensor.from_dlpack(a)
    b = torch.from_dlpack(view)
    del a, view
    garbage = [torch.full((512, 256), 7.0).bfloat16() for _ in range(8)]  # reuse freed memory
    assert float(b.float().sum()) == 1.5 * 512 * 256
    del garbage


def test_from_dlpack_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^weight: cannot be read through __dlpack__"):
        bn1d.BFloat16Tensor.from_dlpack(torch.ones(3, dtype=torch.bfloat16, requires_grad=True),
                                        "weight")
    with pytest.raises(ValueError, match=r"^input: expected dtype bfloat16 through __dlpack__"):
        bn1d.BFloat16Tensor.from_dlpack(torch.ones(3))
