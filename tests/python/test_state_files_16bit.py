# SPDX-License-Identifier: MIT
"""bn1d.save_file / bn1d.load_file with 16-bit tensors: F16 as numpy float16, BF16 read as exact
float32 and written from torch bfloat16 tensors, checked against torch 1.13 (its conversions,
and the state16 fixtures it wrote) and against the file layout."""

import json
import os
import struct

import numpy as np
import pytest
import torch

import bn1d

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "state16")


def _header_and_data(path):
    raw = open(path, "rb").read()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def _same(got, want):
    """Equal values, NaN where want has NaN, and the same signs of zero."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan], want[~nan])
    assert np.array_equal(np.signbit(got[~nan]), np.signbit(want[~nan]))


@pytest.mark.parametrize("name,dtype", [("bn_bfloat16", torch.bfloat16),
                                        ("bn_float16", torch.float16)])
def test_load_torch_fixture(name, dtype):
    loaded = bn1d.load_file(os.path.join(FIXTURES, name + ".safetensors"))
    want_np = np.float32 if dtype == torch.bfloat16 else np.float16
    for key in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "special"):
        assert loaded[key].dtype == want_np, key
        _same(loaded[key], loaded["expected." + key])
    assert loaded["bn.num_batches_tracked"].dtype == np.int64
    assert int(loaded["bn.num_batches_tracked"]) == 3
    # Back in torch, the values are torch's own 16-bit tensor, bit for bit.
    special = torch.from_numpy(loaded["special"]).to(dtype)
    want = torch.from_numpy(loaded["expected.special"]).to(dtype)
    assert torch.equal(special.view(torch.int16)[~want.isnan()],
                       want.view(torch.int16)[~want.isnan()])


def test_load_widens_bfloat16_exactly(tmp_path):
    t = torch.tensor([1.0 / 3, -65504.0, 3.0e38, -1e-40, float("inf"), 0.0],
                     dtype=torch.float64).to(torch.bfloat16)
    path = str(tmp_path / "b.safetensors")
    bn1d.save_file({"b": t}, path)
    got = bn1d.load_file(path)["b"]
    assert got.dtype == np.float32
    _same(got, t.double().numpy())   # torch's widening of the same bits
    assert torch.equal(torch.from_numpy(got).to(torch.bfloat16).view(torch.int16),
                       t.view(torch.int16))


def test_save_writes_bf16_and_f16(tmp_path):
    path = str(tmp_path / "s.safetensors")
    b = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.bfloat16).t()  # non-contiguous
    h = np.array([1.0, 65504.0, -np.inf, 2.0 ** -24], np.float16)
    ht = torch.tensor([0.1, -7.0], dtype=torch.float16)
    bn1d.save_file({"b": b, "h": h, "ht": ht}, path)
    header, data = _header_and_data(path)
    assert header["b"] == {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}
    assert header["h"] == {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}
    assert header["ht"] == {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]}
    # Little-endian bits of b's C-order values (1, 0.5, -2, 3), of h and of ht.
    assert data[:8] == b.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
    assert struct.unpack("<4H", data[:8]) == (0x3F80, 0x3F00, 0xC000, 0x4040)
    assert data[8:16] == h.astype("<f2").tobytes()
    assert data[16:20] == ht.numpy().astype("<f2").tobytes()
    loaded = bn1d.load_file(path)
    assert loaded["h"].dtype == np.float16 and np.array_equal(loaded["h"], h)
    assert np.array_equal(loaded["ht"], ht.numpy())
    assert np.array_equal(loaded["b"], b.float().numpy())


def test_torch_bfloat16_state_dict_round_trips(tmp_path):
    """A torch bfloat16 module's state_dict saved by bn1d loads into another torch bf16 module."""
    torch.manual_seed(0)
    src = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        src.weight.uniform_(0.5, 1.5)
        src.running_var.uniform_(0.5, 2.0)
    src = src.bfloat16()
    path = str(tmp_path / "m.safetensors")
    bn1d.save_file(src.state_dict(), path)
    dst = torch.nn.BatchNorm1d(3).bfloat16()
    dst.load_state_dict({k: torch.from_numpy(v).to(src.state_dict()[k].dtype)
                         for k, v in bn1d.load_file(path).items()})
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key


def test_numpy_float16_round_trips_bit_for_bit(tmp_path):
    bits = np.arange(0, 65536, dtype=np.uint16)
    h = bits.view(np.float16)
    path = str(tmp_path / "all.safetensors")
    bn1d.save_file({"h": h}, path)
    assert np.array_equal(bn1d.load_file(path)["h"].view(np.uint16), bits)  # NaNs included


def test_sixteen_bit_states_load_into_modules_of_their_dtype(tmp_path):
    """A float16 state file is refused by a float32 module (no silent conversion) and loads, bit
    for bit, into a float16 module; the same for bfloat16."""
    for name, dtype in (("bn_float16", "float16"), ("bn_bfloat16", "bfloat16")):
        path = os.path.join(FIXTURES, name + ".safetensors")
        want = bn1d.load_file(path)  # BF16 widened exactly to float32
        channels = len(want["bn.weight"])
        m = bn1d.BatchNorm1d(channels)
        with pytest.raises(ValueError, match=f"dtype mismatch for weight: copying a {dtype} "):
            m.load(path, prefix="bn.")
        assert list(m.weight) == [1.0] * channels
        m16 = bn1d.BatchNorm1d(channels, dtype=dtype)
        m16.load(path, prefix="bn.")
        for key in ("weight", "bias", "running_mean", "running_var"):
            np.testing.assert_array_equal(np.asarray(getattr(m16, key), np.float32),
                                          want["bn." + key].astype(np.float32))


def test_sixteen_bit_inputs_are_refused_by_a_module_of_the_other_16_bit_dtype():
    m = bn1d.BatchNorm1d(3, dtype="bfloat16")
    with pytest.raises(ValueError, match="expected a bfloat16 input .*got float16"):
        m(np.ones((4, 3), np.float16))
    assert int(m.num_batches_tracked) == 0


def test_other_dtypes_still_refused(tmp_path):
    path = str(tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match=r"tensors\['x'\]: expected dtype .*bfloat16, got int32"):
        bn1d.save_file({"x": np.zeros(2, np.int32)}, path)
    with pytest.raises(ValueError, match=r"tensors\['c'\]: expected dtype .*got complex64"):
        bn1d.save_file({"c": torch.zeros(2, dtype=torch.complex64)}, path)
    assert not os.path.exists(path)
