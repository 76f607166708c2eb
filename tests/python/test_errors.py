# SPDX-License-Identifier: MIT
"""Errors under attack (issue 23): every bad argument of bn1d and bn1d.torch is a ValueError
(bad value: dtype, layout, device, shape, range) or a TypeError (wrong Python type) naming the
argument, never another exception type, a crash or a silently converted value.

The sweep feeds every entry point a catalogue of values (None, numbers, strings, containers,
numpy arrays of every dtype and odd shapes, torch tensors of every dtype, sparse, meta, ...) and
accepts only success or ValueError/TypeError (OSError where a file is named that is not there,
AttributeError for assigning an option fixed at construction).
The other tests pin the classes of failures found by review, one regression test each.
"""

import math
import os
import struct

import numpy as np
import pytest
import torch

import bn1d
import bn1d.torch as bt

C = 3


# ---- the catalogue of values ------------------------------------------------------------------

def _numpy_values():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, C))
    out = {}
    for dt in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint64", "float16", "float32",
               "float64", "complex64", "complex128", "object", "datetime64[ns]", "timedelta64[s]",
               "U3", ">f4"):
        out[f"np-{dt}"] = base.astype(dt) if dt not in ("U3",) else base.astype(str).astype(dt)
    out["np-0d"] = np.float32(1.5).reshape(())
    out["np-1d"] = np.ones(C, np.float32)
    out["np-4d"] = np.ones((2, C, 2, 2), np.float32)
    out["np-noncontig"] = np.ones((4, 2 * C), np.float32)[:, ::2]
    out["np-fortran"] = np.asfortranarray(np.ones((4, C), np.float32))
    out["np-empty"] = np.ones((0, C), np.float32)
    out["np-wrong-C"] = np.ones((4, C + 1), np.float32)
    out["np-readonly"] = np.ones((4, C), np.float32)
    out["np-readonly"].flags.writeable = False
    out["np-nan"] = np.full((4, C), np.nan, np.float32)
    return out


def _torch_values():
    base = torch.randn(4, C)
    out = {}
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64,
               torch.bool, torch.int64, torch.uint8):
        out[f"torch-{str(dt)[6:]}"] = base.to(dt)
    out["torch-sparse"] = base.to_sparse()
    out["torch-meta"] = torch.empty(4, C, device="meta")
    out["torch-requires-grad"] = base.clone().requires_grad_()
    out["torch-transposed"] = torch.randn(C, 4).t()
    out["torch-0d"] = torch.tensor(0.5)
    out["torch-param"] = torch.nn.Parameter(torch.ones(C))
    out["torch-conj"] = torch.randn(4, C, dtype=torch.complex64).conj()
    if torch.cuda.is_available():
        out["torch-cuda"] = base.cuda()
    return out


VALUES = {
    "None": None, "int0": 0, "int1": 1, "int-neg": -1, "int-huge": 2**70, "float": 0.5,
    "float-nan": math.nan, "float-inf": math.inf, "bool-true": True, "bool-false": False,
    "complex": 1j, "str": "abc", "str-empty": "", "str-nul": "a\0b", "bytes": b"abc",
    "list": [1.0, 2.0, 3.0], "list-2d": [[1.0] * C] * 4, "list-ragged": [[1.0], [1.0, 2.0]],
    "list-str": ["a", "b", "c"], "tuple": (1.0, 2.0, 3.0), "dict-empty": {}, "dict": {"a": 1},
    "set": {1}, "object": object(), "np-float32-scalar": np.float32(0.25),
    "np-int64-scalar": np.int64(2), "np-bool-scalar": np.bool_(True), "type": float,
    **_numpy_values(), **_torch_values(),
}
OK_ERRORS = (ValueError, TypeError)


def _good_input():
    return np.random.default_rng(1).normal(size=(4, C)).astype(np.float32)


def _check_success_is_not_garbage(target, value, result, m):
    """What a call that succeeded returned or changed is what was asked for, unconverted."""
    if target in ("forward", "call", "infer"):
        # The float32 module's output has the input's dtype: float32, or 16-bit (mixed).
        expected = str(getattr(value, "dtype", "float32")).replace("torch.", "")
        if isinstance(result, bn1d.BFloat16Tensor):
            assert expected == "bfloat16"
        else:
            assert isinstance(result, np.ndarray) and str(result.dtype) == expected
            assert expected in ("float32", "float16")
        assert tuple(result.shape) == tuple(np.shape(value))
    if target.startswith("set-"):
        name = target[4:]
        if name == "training":
            assert isinstance(value, (bool, np.bool_)) and m.training == value
        elif name in ("eps", "momentum"):
            assert value is None or isinstance(value, (int, float, np.floating, np.integer))
            assert not isinstance(value, (bool, np.bool_))
        elif name in ("weight", "bias", "running_mean", "running_var"):
            arr = value if isinstance(value, np.ndarray) else np.asarray(
                value.detach() if isinstance(value, torch.Tensor) else value)
            assert arr.dtype.kind in "fiu" and arr.shape == (C,)


def _bn1d_targets(tmp_path):
    saved = str(tmp_path / "good.safetensors")
    bn1d.BatchNorm1d(C).save(saved)
    good = bn1d.BatchNorm1d(C).state_dict()

    def trained():
        m = bn1d.BatchNorm1d(C)
        m(_good_input())
        return m

    return {
        "ctor-num_features": lambda m, v: bn1d.BatchNorm1d(v),
        "ctor-eps": lambda m, v: bn1d.BatchNorm1d(C, eps=v),
        "ctor-momentum": lambda m, v: bn1d.BatchNorm1d(C, momentum=v),
        "ctor-affine": lambda m, v: bn1d.BatchNorm1d(C, affine=v),
        "ctor-track": lambda m, v: bn1d.BatchNorm1d(C, track_running_stats=v),
        "ctor-dtype": lambda m, v: bn1d.BatchNorm1d(C, dtype=v),
        "forward": lambda m, v: m.forward(v),
        "call": lambda m, v: m(v),
        "infer": lambda m, v: m.infer(v),
        "backward": lambda m, v: trained().backward(v),
        "backward-before-forward": lambda m, v: m.backward(v),
        "train": lambda m, v: m.train(v),
        **{f"set-{name}": (lambda name: lambda m, v: setattr(m, name, v))(name)
           for name in ("training", "eps", "momentum", "num_features", "affine",
                        "track_running_stats", "dtype", "weight", "bias", "running_mean",
                        "running_var", "num_batches_tracked")},
        "load_state_dict": lambda m, v: m.load_state_dict(v),
        "load_state_dict-key": lambda m, v: m.load_state_dict({v: good["weight"]}),
        "load_state_dict-weight": lambda m, v: m.load_state_dict({**good, "weight": v}),
        "load_state_dict-count": lambda m, v: m.load_state_dict({**good,
                                                                 "num_batches_tracked": v}),
        "load_state_dict-unexpected": lambda m, v: m.load_state_dict({**good, "extra": v},
                                                                     strict=False),
        "load_state_dict-strict": lambda m, v: m.load_state_dict(good, strict=v),
        "save": lambda m, v: m.save(v),
        "load": lambda m, v: m.load(v),
        "load-prefix": lambda m, v: m.load(saved, prefix=v),
    }


BN1D_TARGETS = ["ctor-num_features", "ctor-eps", "ctor-momentum", "ctor-affine", "ctor-track",
                "ctor-dtype", "forward", "call", "infer", "backward", "backward-before-forward",
                "train", "set-training", "set-eps", "set-momentum", "set-num_features",
                "set-affine", "set-track_running_stats", "set-dtype", "set-weight", "set-bias",
                "set-running_mean", "set-running_var", "set-num_batches_tracked",
                "load_state_dict", "load_state_dict-key", "load_state_dict-weight",
                "load_state_dict-count", "load_state_dict-unexpected", "load_state_dict-strict",
                "save", "load", "load-prefix"]


# Options fixed at construction: assigning them is an AttributeError, whatever the value.
FIXED_OPTION_TARGETS = ("set-num_features", "set-affine", "set-track_running_stats", "set-dtype")


@pytest.mark.parametrize("value_id", list(VALUES))
@pytest.mark.parametrize("target", BN1D_TARGETS)
def test_sweep_bn1d(target, value_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths named by the catalogue ("abc") land here
    value = VALUES[value_id]
    m = bn1d.BatchNorm1d(C)
    call = _bn1d_targets(tmp_path)[target]
    allowed = OK_ERRORS + ((OSError,) if target in ("load", "save") else ()) + (
        (AttributeError,) if target in FIXED_OPTION_TARGETS else ())
    try:
        result = call(m, value)
    except allowed:
        return
    except Exception as e:  # noqa: BLE001 -- the point of the test
        pytest.fail(f"{target}({value_id}) raised {type(e).__name__}: {e}")
    _check_success_is_not_garbage(target, value, result, m)
    if target == "load_state_dict-unexpected":
        assert list(m.weight) == [1.0] * C


def _torch_targets():
    x = torch.randn(4, C)

    def forward_with(name, training):
        def f(m, v):
            setattr(m, name, v)
            m.train(training)
            return m(x)
        return f

    def forward(training):
        def f(m, v):
            m.train(training)
            y = m(v)
            assert isinstance(y, torch.Tensor) and y.shape == v.shape
            return y
        return f

    return {
        "ctor-num_features": lambda m, v: bt.BatchNorm1d(v),
        "ctor-eps": lambda m, v: bt.BatchNorm1d(C, eps=v),
        "ctor-momentum": lambda m, v: bt.BatchNorm1d(C, momentum=v),
        "ctor-dtype": lambda m, v: bt.BatchNorm1d(C, dtype=v),
        "ctor-device": lambda m, v: bt.BatchNorm1d(C, device=v),
        "forward-train": forward(True),
        "forward-eval": forward(False),
        "eps-forward": forward_with("eps", True),
        "momentum-forward": forward_with("momentum", True),
        "momentum-forward-eval": forward_with("momentum", False),
        "load_state_dict": lambda m, v: m.load_state_dict(v),
        "load_state_dict-weight": lambda m, v: m.load_state_dict({**m.state_dict(),
                                                                  "weight": v}),
        "convert": lambda m, v: bt.convert(v),
        "revert": lambda m, v: bt.revert(v),
        "train": lambda m, v: m.train(v),
        **{f"{name}-forward{'' if training else '-eval'}": forward_with(name, training)
           for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
           for training in (True, False)},
    }


TORCH_TARGETS = ["ctor-num_features", "ctor-eps", "ctor-momentum", "ctor-dtype", "ctor-device",
                 "forward-train", "forward-eval", "eps-forward", "momentum-forward",
                 "momentum-forward-eval", "load_state_dict", "load_state_dict-weight",
                 "convert", "revert", "train"] + [
                     f"{name}-forward{suffix}" for name in ("weight", "bias", "running_mean",
                                                            "running_var", "num_batches_tracked")
                     for suffix in ("", "-eval")]


@pytest.mark.parametrize("value_id", list(VALUES))
@pytest.mark.parametrize("target", TORCH_TARGETS)
def test_sweep_torch_adapter(target, value_id):
    value = VALUES[value_id]
    m = bt.BatchNorm1d(C)
    try:
        _torch_targets()[target](m, value)
    except OK_ERRORS:
        return
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{target}({value_id}) raised {type(e).__name__}: {e}")


def test_sweep_lists_agree(tmp_path):
    assert sorted(BN1D_TARGETS) == sorted(_bn1d_targets(tmp_path))
    assert sorted(TORCH_TARGETS) == sorted(_torch_targets())


# ---- the classes found by review, one regression test each --------------------------------

@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("features", [1, 2, 5])
def test_torch_adapter_channel_count_is_torchs_error(training, affine, track, features):
    """A module of `features` channels on 4-channel input: torch's RuntimeError and text (an
    Error: RuntimeError and ValueError), raised before anything changes (torch itself counts
    the batch first), or torch's success where torch has nothing to check."""
    x = torch.randn(3, 4)
    ref = torch.nn.BatchNorm1d(features, affine=affine, track_running_stats=track)
    ours = bt.BatchNorm1d(features, affine=affine, track_running_stats=track)
    ref.train(training)
    ours.train(training)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    try:
        expected = ref(x)
    except RuntimeError as e:
        with pytest.raises(RuntimeError) as got:
            ours(x)
        assert isinstance(got.value, ValueError)
        assert str(got.value) == str(e)
        for k, v in ours.state_dict().items():
            assert torch.equal(v, before[k]), k
        return
    torch.testing.assert_close(ours(x), expected)


def test_torch_adapter_functional_channel_count():
    """The autograd function itself checks: no broadcasting of one value over four channels."""
    from bn1d._torch_step import LocalCombiner, StepFunction, StepOptions
    x = torch.randn(3, 4)
    one = torch.ones(1)

    def options(batch_statistics):
        return StepOptions(batch_statistics, 0.1, 1e-5, None, None, LocalCombiner())

    with pytest.raises(ValueError, match=r"expected a float64 tensor of shape \[4\].*got .*\[1\]"):
        StepFunction.apply(x, None, None, one.clone(), one.clone(), options(False))
    with pytest.raises(ValueError, match=r"^weight: expected a float32 tensor of shape \[4\]"):
        StepFunction.apply(x, one, one, None, None, options(True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_torch_adapter_failed_forward_keeps_the_count(dtype):
    """A forward that fails (float16 has no CPU kernel in torch 1.13, float64 is not the module's
    dtype) leaves num_batches_tracked as it was."""
    m = bt.BatchNorm1d(4)
    try:
        m(torch.randn(3, 4, dtype=dtype))  # bfloat16: torch's own forward, which succeeds
    except (ValueError, TypeError):
        assert int(m.num_batches_tracked) == 0
    count = int(m.num_batches_tracked)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        m(torch.randn(1, 4))
    assert int(m.num_batches_tracked) == count


@pytest.mark.parametrize("name", ["eps", "momentum"])
@pytest.mark.parametrize("value", ["0.1", 1j, [0.1], np.array([0.1])])
def test_torch_adapter_bad_option_is_torchs_type_error(name, value):
    """What torch's batch_norm refuses as a float is a TypeError (torch's text), before the
    count moves; nothing is converted (float('0.1') would be)."""
    ref = torch.nn.BatchNorm1d(4)
    ours = bt.BatchNorm1d(4)
    setattr(ref, name, value)
    setattr(ours, name, value)
    x = torch.randn(3, 4)
    with pytest.raises(TypeError) as e:
        ref(x)
    with pytest.raises(TypeError, match=f"argument '{name}'"):
        ours(x)
    assert f"'{name}'" in str(e.value)
    assert int(ours.num_batches_tracked) == 0


def _unreadable_values():
    return {
        "bfloat16": torch.zeros(2, dtype=torch.bfloat16),
        "meta": torch.zeros(2, device="meta"),
        "sparse": torch.zeros(2).to_sparse(),
        "object": np.array([object()]),
        "string": "abc",
        "None": None,
        "complex": np.zeros(2, complex),
        "dict": {"a": 1},
    }


@pytest.mark.parametrize("kind", list(_unreadable_values()))
def test_strict_false_ignores_unexpected_values_unread(kind):
    m = bn1d.BatchNorm1d(3)
    state = {**m.state_dict(), "weight": np.full(3, 2.0, np.float32),
             "extra": _unreadable_values()[kind]}
    m.load_state_dict(state, strict=False)
    assert list(m.weight) == [2.0] * 3
    with pytest.raises(ValueError, match='Unexpected key\\(s\\) in state_dict: "extra"'):
        m.load_state_dict(state)
    # Keys a module without affine or running statistics does not have are unexpected too.
    n = bn1d.BatchNorm1d(3, affine=False, track_running_stats=False)
    n.load_state_dict({"weight": _unreadable_values()[kind],
                       "running_var": _unreadable_values()[kind]}, strict=False)


@pytest.mark.parametrize("kind", ["bfloat16", "meta", "sparse"])
def test_unreadable_state_values_are_value_errors(kind):
    m = bn1d.BatchNorm1d(2)
    with pytest.raises(ValueError, match="weight"):
        m.load_state_dict({**m.state_dict(), "weight": _unreadable_values()[kind]})
    with pytest.raises(ValueError, match="input"):  # bfloat16: not for a float16 module
        (bn1d.BatchNorm1d(2, dtype="float16") if kind == "bfloat16" else m)(
          torch.zeros(3, 2, dtype=torch.bfloat16) if kind == "bfloat16"
          else torch.zeros(3, 2, device="meta") if kind == "meta"
          else torch.zeros(3, 2).to_sparse())
    with pytest.raises(TypeError, match="state_dict: expected a dict-like mapping, got list"):
        m.load_state_dict([("weight", np.ones(2, np.float32))])
    with pytest.raises(TypeError, match="state_dict key: expected str, got int"):
        m.load_state_dict({1: np.ones(2, np.float32)})


def test_setters_do_not_convert():
    m = bn1d.BatchNorm1d(3)
    before = m.state_dict()
    for name, value, error in [("training", "no", TypeError), ("training", 1, TypeError),
                               ("training", None, TypeError), ("weight", 1j, TypeError),
                               ("weight", None, TypeError), ("weight", np.ones(3, complex),
                                                              ValueError),
                               ("bias", np.array(["a", "b", "c"]), ValueError),
                               ("running_var", [None, None, None], ValueError),
                               ("running_mean", np.ones(1, np.float32), ValueError),
                               ("running_mean", np.ones(3, bool), ValueError),
                               ("eps", 1j, TypeError), ("eps", None, TypeError),
                               ("eps", "0.1", TypeError), ("eps", True, TypeError),
                               ("eps", -1.0, ValueError), ("eps", math.nan, ValueError),
                               ("momentum", 1j, TypeError), ("momentum", "0.1", TypeError),
                               ("momentum", 1.5, ValueError), ("momentum", False, TypeError),
                               ("affine", "no", AttributeError),
                               ("affine", False, AttributeError),
                               ("affine", True, AttributeError),
                               ("track_running_stats", 0, AttributeError),
                               ("num_features", 4, AttributeError),
                               ("num_features", 3, AttributeError),
                               ("num_features", 3.0, AttributeError),
                               ("num_batches_tracked", 1.5, TypeError),
                               ("num_batches_tracked", -1, ValueError),
                               ("dtype", "float64", AttributeError),
                               ("dtype", "float32", AttributeError),
                               ("dtype", None, AttributeError)]:
        with pytest.raises(error, match=name):
            setattr(m, name, value)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert m.training is True
    assert repr(m) == "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, " \
                      "track_running_stats=True)"


def test_eps_and_momentum_setters_take_effect():
    """m.eps / m.momentum change the computation as in torch (and None: a cumulative average),
    keeping the parameters, buffers, their views, the count and the mode."""
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=(6, 3)).astype(np.float32) for _ in range(3)]
    ours = bn1d.BatchNorm1d(3)
    ref = torch.nn.BatchNorm1d(3)
    w = ours.weight
    ours(xs[0])
    ref(torch.from_numpy(xs[0]))
    ours.momentum = ref.momentum = None
    ours.eps = ref.eps = 0.5
    assert np.shares_memory(w, ours.weight) and ours.num_batches_tracked == 1
    ours(xs[1])
    ref(torch.from_numpy(xs[1]))
    ours.momentum = ref.momentum = 0.01
    ours.eval()
    ref.eval()
    np.testing.assert_allclose(ours(xs[2]), ref(torch.from_numpy(xs[2])).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-5, atol=1e-6)
    assert ours.num_batches_tracked == 2 and not ours.training
    assert repr(ours) == repr(ref)
    ours.momentum = 1  # ints are real numbers, as in torch
    assert ours.momentum == 1


@pytest.mark.parametrize("call", ["save", "load", "load-bytes"])
def test_embedded_nul_is_a_value_error(call, tmp_path):
    m = bn1d.BatchNorm1d(2)
    good = tmp_path / "m.safetensors"
    m.save(good)
    (tmp_path / "a").write_bytes(good.read_bytes())  # what the prefix before the NUL names
    with pytest.raises(ValueError, match="null"):
        if call == "save":
            m.save(str(tmp_path / "a\0b"))
        elif call == "load":
            m.load(str(tmp_path / "a\0b"))
        else:
            m.load(os.fsencode(str(tmp_path / "a\0b")))
    assert not (tmp_path / "a\0b").exists() if call == "save" else True


def _safetensors_with_key(path, key):
    header = b'{"' + key + b'":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))


def test_non_utf8_messages_arrive_intact(tmp_path):
    """C++ messages holding bytes that are not UTF-8 reach Python whole, the bytes escaped."""
    m = bn1d.BatchNorm1d(2)
    with pytest.raises(ValueError) as e:  # a key from Python (surrogate-escaped bytes)
        m.load_state_dict({**m.state_dict(), "w\udcff": np.zeros(2, np.float32)})
    assert str(e.value).endswith('Unexpected key(s) in state_dict: "w\\xff".')
    bad = tmp_path / "bad.safetensors"
    _safetensors_with_key(bad, b"w\xff")
    with pytest.raises(ValueError) as e:  # a key from a file
        m.load(bad)
    assert "w\\xff" in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(OSError) as e:  # a file name that is not UTF-8
        m.load(os.fsencode(str(tmp_path)) + b"/nothing\xff/x")
    assert "nothing" in str(e.value)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("none", [(), ("weight",), ("bias",), ("weight", "bias"),
                                  ("running_mean",), ("running_var",),
                                  ("running_mean", "running_var"), ("num_batches_tracked",)])
def test_torch_adapter_parameters_set_to_none(training, none):
    """Parameters and buffers set to None by hand: torch's result or torch's error, never
    another computation (a bias without a weight is not dropped)."""
    x = torch.randn(5, 3)
    ref = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        ref.weight.uniform_()
        ref.bias.uniform_()
    ours = bt.BatchNorm1d(3)
    ours.load_state_dict(ref.state_dict())
    for m in (ref, ours):
        for name in none:
            setattr(m, name, None)
        m.train(training)
    try:
        expected = ref(x)
    except Exception as e:  # noqa: BLE001
        with pytest.raises(type(e)) as got:
            ours(x)
        assert str(got.value) == str(e) and isinstance(got.value, (ValueError, TypeError))
        return
    torch.testing.assert_close(ours(x), expected)
