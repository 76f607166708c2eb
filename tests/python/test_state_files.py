# SPDX-License-Identifier: MIT
"""bn1d.save_file / bn1d.load_file (safetensors without the safetensors package): the layout
against a reader written here from the format's specification, torch state dicts both ways,
dtypes and strides, and the errors: the system's OSError classes with filename set, and files
that are not safetensors (torch.save's zip and pickle files) named as such."""

import errno
import json
import os
import pickle
import struct
from collections import OrderedDict

import numpy as np
import pytest
import torch

import bn1d

CODES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8")}


def _read_safetensors(path):
    """(header dict, {key: array}) of a safetensors file, read by the specification: 8-byte
    little-endian header length, JSON header, then the data section."""
    raw = open(path, "rb").read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length], object_pairs_hook=OrderedDict)
    data = raw[8 + length:]
    tensors = OrderedDict()
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        tensors[key] = np.frombuffer(data[begin:end], CODES[entry["dtype"]]).reshape(
            entry["shape"])
    return header, tensors


def _sample():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 6))
    return OrderedDict([
        ("z.weight", base.astype(np.float32)),
        ("a.running_var", base[:, 0].astype(np.float64)),
        ("count", np.array(-(2**62) - 3, np.int64)),  # 0-d
        ("empty", np.zeros((0, 3), np.float32)),
        ("transposed", base.astype(np.float32).T),
        ("strided", base[::-2, 1::3].astype(np.float64)[:, ::-1]),
        ("big-endian", base[0].astype(">f4")),
        ("torch", torch.from_numpy(base).float().t()),
        ("param", torch.nn.Parameter(torch.arange(3, dtype=torch.float64))),
        ("torch-int", torch.tensor([[1, -2], [3, 2**40]])),
    ])


def _expected(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().numpy()
    return value.astype(value.dtype.newbyteorder("="))


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "s.safetensors"
    sample = _sample()
    bn1d.save_file(sample, path, metadata={"format": "np", "note": "é"})
    header, raw = _read_safetensors(path)
    assert list(header) == ["__metadata__", *sample]
    assert header["__metadata__"] == {"format": "np", "note": "é"}
    expected_codes = {"z.weight": "F32", "a.running_var": "F64", "count": "I64", "empty": "F32",
                      "transposed": "F32", "strided": "F64", "big-endian": "F32",
                      "torch": "F32", "param": "F64", "torch-int": "I64"}
    for key, value in sample.items():
        assert header[key]["dtype"] == expected_codes[key], key
        assert header[key]["shape"] == list(value.shape), key
        np.testing.assert_array_equal(raw[key], _expected(value), err_msg=key)
    loaded = bn1d.load_file(path)
    assert type(loaded) is dict and list(loaded) == list(sample)
    for key, value in sample.items():
        got = loaded[key]
        assert isinstance(got, np.ndarray) and got.flags.c_contiguous, key
        assert got.dtype == _expected(value).dtype and got.dtype.isnative, key
        np.testing.assert_array_equal(got, _expected(value), err_msg=key)
    assert bn1d.load_file(str(path)).keys() == loaded.keys()  # str, bytes and Path alike
    assert bn1d.load_file(os.fsencode(path)).keys() == loaded.keys()


def test_empty_and_no_metadata(tmp_path):
    path = tmp_path / "e.safetensors"
    bn1d.save_file({}, path)
    assert _read_safetensors(path)[0] == {}
    assert bn1d.load_file(path) == {}


@pytest.mark.parametrize("value, dtype", [
    (np.zeros(2, np.int32), "int32"),  # float16 and bfloat16: test_state_files_16bit.py
    (np.zeros(2, bool), "bool"), (np.zeros(2, np.uint64), "uint64"),
    (np.zeros(2, complex), "complex128"), (np.array([object()]), "object"),
    (torch.zeros(2, dtype=torch.int32), "int32")])
def test_unsupported_dtypes_name_key_and_dtype(tmp_path, value, dtype):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match=f"tensors\\['bad'\\].*{dtype}") as e:
        bn1d.save_file({"ok": np.zeros(1, np.float32), "bad": value}, path)
    assert "float32, float64, int64, float16 or (torch) bfloat16" in str(e.value)
    assert not path.exists()


def test_bad_arguments(tmp_path):
    path = tmp_path / "x.safetensors"
    good = {"a": np.zeros(1, np.float32)}
    for call, error, word in [
            (lambda: bn1d.save_file([("a", good["a"])], path), TypeError, "tensors"),
            (lambda: bn1d.save_file({1: good["a"]}, path), TypeError, "tensors key"),
            (lambda: bn1d.save_file({"a": "text"}, path), TypeError, "tensors\\['a'\\]"),
            (lambda: bn1d.save_file(good, path, metadata={"k": 1}), TypeError, "metadata"),
            (lambda: bn1d.save_file(good, path, metadata={1: "v"}), TypeError, "metadata key"),
            (lambda: bn1d.save_file(good, path, metadata=["k"]), TypeError, "metadata"),
            (lambda: bn1d.save_file({"__metadata__": good["a"]}, path), ValueError,
             "__metadata__"),
            (lambda: bn1d.save_file({"\udcff": good["a"]}, path), ValueError, "UTF-8"),
            (lambda: bn1d.save_file(good, 5), TypeError, "path"),
            (lambda: bn1d.save_file(good, str(path) + "\0"), ValueError, "null"),
            (lambda: bn1d.load_file(None), TypeError, "path")]:
        with pytest.raises(error, match=word):
            call()
    assert not path.exists()


# ---- torch state dicts, both ways ------------------------------------------------------------

def _trained_torch(dtype=torch.float32):
    ref = torch.nn.BatchNorm1d(5, momentum=0.3, dtype=dtype)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    for seed in range(3):
        ref(torch.randn(8, 5, generator=torch.Generator().manual_seed(seed), dtype=dtype))
    return ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_state_dict_loads_into_bn1d(tmp_path, dtype):
    ref = _trained_torch(dtype).eval()
    path = tmp_path / "torch.safetensors"
    bn1d.save_file(ref.state_dict(), path)
    m = bn1d.BatchNorm1d(5, momentum=0.3, dtype=dtype)
    m.load(path)
    assert m.num_batches_tracked == int(ref.num_batches_tracked) == 3
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(m.state_dict()[k], v.numpy(), err_msg=k)
    x = torch.randn(6, 5, dtype=dtype)
    np.testing.assert_allclose(m.eval()(x.numpy()), ref(x).detach().numpy(), rtol=1e-6,
                               atol=1e-6)
    # With a prefix, as one layer of a model's file.
    model = torch.nn.Sequential(torch.nn.Linear(5, 5, dtype=dtype), ref)
    bn1d.save_file(model.state_dict(), tmp_path / "model.safetensors")
    n = bn1d.BatchNorm1d(5, dtype=dtype)
    n.load(tmp_path / "model.safetensors", prefix="1.")
    assert n.num_batches_tracked == 3
    np.testing.assert_array_equal(n.running_var, ref.running_var.numpy())


@pytest.mark.parametrize("writer", ["save", "save_file"])
def test_bn1d_state_loads_into_torch(tmp_path, writer):
    m = bn1d.BatchNorm1d(5, momentum=0.3)
    m.weight = np.linspace(0.5, 1.5, 5)
    rng = np.random.default_rng(4)
    for _ in range(4):
        m(rng.normal(size=(8, 5)).astype(np.float32))
    path = tmp_path / "bn1d.safetensors"
    if writer == "save":
        m.save(path)
    else:
        bn1d.save_file(m.state_dict(), path)
    ref = torch.nn.BatchNorm1d(5, momentum=0.3)
    result = ref.load_state_dict({k: torch.from_numpy(v) for k, v in bn1d.load_file(path).items()})
    assert not result.missing_keys and not result.unexpected_keys
    assert int(ref.num_batches_tracked) == 4 and ref.num_batches_tracked.dtype == torch.int64
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(ref.state_dict()[k].numpy(), v, err_msg=k)


# ---- errors ------------------------------------------------------------------------------

def _file_calls(path):
    """Every call that reads or writes path."""
    m = bn1d.BatchNorm1d(2)
    return {"load_file": lambda: bn1d.load_file(path), "load": lambda: m.load(path),
            "save_file": lambda: bn1d.save_file({"a": np.zeros(1, np.float32)}, path),
            "save": lambda: m.save(path)}


@pytest.mark.parametrize("call", ["load_file", "load", "save_file", "save"])
def test_missing_file_or_directory_is_file_not_found(tmp_path, call):
    path = tmp_path / "no-such-dir" / "x.safetensors"
    with pytest.raises(FileNotFoundError) as e:
        _file_calls(path)[call]()
    assert e.value.errno == errno.ENOENT and e.value.filename == str(path)
    assert str(path) in str(e.value)
    if call.startswith("load"):
        with pytest.raises(FileNotFoundError) as e:
            _file_calls(os.fsencode(tmp_path / "missing"))[call]()
        assert e.value.filename == os.fsencode(tmp_path / "missing")


@pytest.mark.parametrize("call", ["load_file", "load", "save_file", "save"])
def test_directory_is_is_a_directory_error(tmp_path, call):
    with pytest.raises(IsADirectoryError) as e:
        _file_calls(tmp_path)[call]()
    assert e.value.errno == errno.EISDIR and e.value.filename == str(tmp_path)
    assert tmp_path.is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes files without permission")
@pytest.mark.parametrize("call", ["load_file", "load", "save_file", "save"])
def test_permission_denied_is_permission_error(tmp_path, call):
    locked = tmp_path / "locked"
    locked.mkdir()
    bn1d.BatchNorm1d(2).save(locked / "x.safetensors")
    (locked / "x.safetensors").chmod(0)
    locked.chmod(0o500)
    try:
        target = locked / ("x.safetensors" if call.startswith("load") else "new.safetensors")
        with pytest.raises(PermissionError) as e:
            _file_calls(target)[call]()
        assert e.value.errno == errno.EACCES and e.value.filename == str(target)
    finally:
        locked.chmod(0o700)


def test_fifo_is_an_os_error_without_waiting(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="FIFO"):
        bn1d.load_file(fifo)


def _not_safetensors_files(tmp_path):
    state = torch.nn.BatchNorm1d(3).state_dict()
    files = {}
    files["torch.save"] = tmp_path / "zip.pt"
    torch.save(state, files["torch.save"])
    files["legacy torch.save"] = tmp_path / "legacy.pt"
    torch.save(state, files["legacy torch.save"], _use_new_zipfile_serialization=False)
    for protocol in (2, 4, 5):
        files[f"pickle {protocol}"] = tmp_path / f"p{protocol}.pkl"
        files[f"pickle {protocol}"].write_bytes(
            pickle.dumps({k: v.numpy() for k, v in state.items()}, protocol=protocol))
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("weight = [1, 1, 1]\n" * 10)
    files["short"] = tmp_path / "short"
    files["short"].write_bytes(b"abc")
    return files


WORDS = {"torch.save": ["zip archive", "torch.save", "torch.load"],
         "legacy torch.save": ["pickle (protocol 2)", "torch.load"],
         "pickle 2": ["pickle (protocol 2)"], "pickle 4": ["pickle (protocol 4)"],
         "pickle 5": ["pickle (protocol 5)"], "text": ["header length"], "short": ["8 bytes"]}


@pytest.mark.parametrize("kind", list(WORDS))
def test_other_formats_say_they_are_not_safetensors(tmp_path, kind):
    path = _not_safetensors_files(tmp_path)[kind]
    m = bn1d.BatchNorm1d(3)
    for call in (lambda: bn1d.load_file(path), lambda: m.load(path)):
        with pytest.raises(ValueError, match="not a safetensors file") as e:
            call()
        assert str(path) in str(e.value)
        for word in WORDS[kind]:
            assert word in str(e.value)
        assert "exceeds the limit" not in str(e.value) or kind == "text"
    assert list(m.weight) == [1.0] * 3
