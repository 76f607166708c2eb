# SPDX-License-Identifier: MIT
"""bn1d's Python module: state_dict / load_state_dict against torch.nn.BatchNorm1d, the views of
the module's tensors, resets, and safetensors files (save / load)."""

import gc
import json
import struct

import numpy as np
import pytest
import torch

import bn1d


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_dict(affine, track, dtype):
    m = bn1d.BatchNorm1d(5, affine=affine, track_running_stats=track, dtype=dtype)
    t = torch.nn.BatchNorm1d(5, affine=affine, track_running_stats=track)
    state, tstate = m.state_dict(), t.state_dict()
    assert list(state) == list(tstate)
    for key, value in state.items():
        assert isinstance(value, np.ndarray)
        if key == "num_batches_tracked":
            assert value.shape == () and value.dtype == np.int64 and value == 0
        else:
            assert value.shape == (5,) and value.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(value, tstate[key].numpy())
    if affine:  # copies, not views
        state["weight"][:] = 7
        assert m.weight[0] == 1
    assert (m.weight is None) == (not affine) and (m.bias is None) == (not affine)
    assert (m.running_mean is None) == (not track) and (m.running_var is None) == (not track)
    assert m.num_batches_tracked == (0 if track else None)


def test_load_state_dict_from_torch():
    torch.manual_seed(0)
    t = torch.nn.BatchNorm1d(6, momentum=None)
    with torch.no_grad():
        t.weight.uniform_(0.5, 1.5)
        t.bias.normal_()
    for _ in range(3):
        t(torch.randn(8, 6, 4))
    m = bn1d.BatchNorm1d(6, momentum=None)
    m.load_state_dict(t.state_dict())  # torch tensors, the weight requiring grad
    assert m.num_batches_tracked == 3
    x = np.random.default_rng(1).normal(size=(8, 6, 4)).astype(np.float32)
    for training in (False, True):
        t.train(training)
        m.train(training)
        expected = t(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(m(x), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(m.running_mean, t.running_mean.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(m.running_var, t.running_var.numpy(), rtol=1e-6, atol=1e-7)
    assert m.num_batches_tracked == int(t.num_batches_tracked) == 4


def test_load_state_dict_errors():
    m = bn1d.BatchNorm1d(3)
    good = m.state_dict()
    with pytest.raises(ValueError, match='Missing key\\(s\\) in state_dict: "running_var"'):
        m.load_state_dict({k: v for k, v in good.items() if k != "running_var"})
    m.load_state_dict({"weight": np.full(3, 2, np.float32)}, strict=False)
    assert list(m.weight) == [2, 2, 2]
    with pytest.raises(ValueError, match="size or dtype mismatch for bias"):
        m.load_state_dict({**good, "bias": np.zeros(3, np.float64)})
    with pytest.raises(ValueError, match="size or dtype mismatch for bias"):
        m.load_state_dict({**good, "bias": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="size or dtype mismatch for bias"):
        m.load_state_dict({**good, "bias": np.zeros(3, np.float16)})
    with pytest.raises(ValueError, match='Unexpected key\\(s\\) in state_dict: "extra"'):
        m.load_state_dict({**good, "extra": np.zeros(2, np.int32)})
    m.load_state_dict({**good, "extra": np.zeros(2, np.int32)}, strict=False)
    assert list(m.weight) == [1, 1, 1]  # loaded from `good`
    # A failed load changes nothing; the count may be a Python int.
    m.load_state_dict({**good, "num_batches_tracked": 5})
    with pytest.raises(ValueError):
        m.load_state_dict({**good, "weight": np.zeros(3, np.float32), "bias": None})
    assert list(m.weight) == [1, 1, 1] and m.num_batches_tracked == 5


def test_weight_is_a_writable_view():
    m = bn1d.BatchNorm1d(4)
    x = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    w = m.weight
    assert w.flags.writeable and np.shares_memory(w, m.weight)
    y1 = m.infer(x)
    w[:] = 2.0
    m.bias[1] = 3.0
    y2 = m.infer(x)
    expected = y1 * 2
    expected[:, 1] += 3
    np.testing.assert_allclose(y2, expected, rtol=1e-6, atol=1e-6)
    m.running_var[:] = 4.0  # buffers too
    np.testing.assert_allclose(m.infer(x), (x / np.sqrt(4 + 1e-5)) * 2 + [0, 3, 0, 0],
                               rtol=1e-6, atol=1e-6)
    # Views stay valid across load_state_dict and reset_parameters (copies in place).
    m.reset_parameters()
    assert list(w) == [1, 1, 1, 1]
    m.load_state_dict({**m.state_dict(), "weight": np.arange(4, dtype=np.float32)})
    assert list(w) == [0, 1, 2, 3]
    m.weight = np.full(4, 5.0)  # assignment copies into the module's storage
    assert list(w) == [5, 5, 5, 5]
    with pytest.raises(ValueError):
        m.weight = np.zeros(3)
    # A view keeps its module alive.
    del m
    gc.collect()
    assert list(w) == [5, 5, 5, 5]


def test_reset_running_stats():
    m = bn1d.BatchNorm1d(3)
    m(np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32))
    m.weight[:] = 2
    m.reset_running_stats()
    assert m.num_batches_tracked == 0 and list(m.running_mean) == [0, 0, 0]
    assert list(m.running_var) == [1, 1, 1] and list(m.weight) == [2, 2, 2]
    m.reset_parameters()
    assert list(m.weight) == [1, 1, 1]


def safetensors_bytes(tensors):
    """A minimal safetensors writer (the format is simple; the safetensors package is not
    needed): 8-byte little-endian header size, JSON header, raw little-endian data."""
    header, data = {}, b""
    codes = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64"}
    for key, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[key] = dict(dtype=codes[a.dtype], shape=list(a.shape),
                           data_offsets=[len(data), len(data) + len(raw)])
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    m = bn1d.BatchNorm1d(5, momentum=0.3)
    m.weight[:] = rng.normal(size=5)
    for _ in range(2):
        m(rng.normal(size=(6, 5, 2)).astype(np.float32))
    path = tmp_path / "bn.safetensors"
    m.save(path)
    n = bn1d.BatchNorm1d(5, momentum=0.3)
    n.load(str(path))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(n.state_dict()[k], v)
    # One layer of a whole-model file.
    model = {f"layers.1.{k}": v for k, v in m.state_dict().items()}
    model["layers.0.weight"] = np.zeros((2, 2), np.float32)
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes(model))
    p = bn1d.BatchNorm1d(5)
    p.load(tmp_path / "model.safetensors", prefix="layers.1.")
    assert p.num_batches_tracked == 2
    np.testing.assert_array_equal(p.running_var, m.running_var)
    with pytest.raises(ValueError):
        p.load(tmp_path / "model.safetensors", prefix="layers.0.")
    with pytest.raises(OSError, match="missing.safetensors"):
        p.load(tmp_path / "missing.safetensors")
    with pytest.raises(OSError, match="for writing"):
        m.save(tmp_path / "no-such-dir" / "bn.safetensors")
