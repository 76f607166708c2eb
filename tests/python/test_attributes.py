# SPDX-License-Identifier: MIT
"""bn1d.BatchNorm1d's attributes as torch's (live eps and momentum, options fixed at
construction, dtype forms), load_state_dict's IncompatibleKeys against torch 1.13,
bn1d.__version__, plain docstrings and the compiled module's type stubs."""

import ast
import os
import pydoc
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

import bn1d
from bn1d import _bn1d

C = 3
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUB = os.path.join(ROOT, "python", "bn1d", "_bn1d.pyi")


def _batches(n, seed=0, shape=(6, C)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(n)]


def _assert_state_equal(ours, ref):
    expected = ref.state_dict()
    got = ours.state_dict()
    assert list(got) == list(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(got[k], v.numpy(), rtol=1e-6, atol=1e-7, err_msg=k)


# ---- eps and momentum: live, checked on assignment -------------------------------------------

def test_momentum_schedule_matches_torch():
    """A momentum changed between steps (a schedule, None included) is used by the next step."""
    ours, ref = bn1d.BatchNorm1d(C), torch.nn.BatchNorm1d(C)
    for x, momentum, eps in zip(_batches(5), [0.5, None, 0.0, 1, 0.25], [1e-5, 0.1, 2, 0, 1e-3]):
        ours.momentum = ref.momentum = momentum
        ours.eps = ref.eps = eps
        np.testing.assert_allclose(ours(x), ref(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-5)
        _assert_state_equal(ours, ref)
        assert ours.momentum == momentum and ours.eps == eps
    assert repr(ours) == repr(ref)


@pytest.mark.parametrize("name, value, error", [
    ("eps", -1.0, ValueError), ("eps", float("nan"), ValueError), ("eps", float("inf"), ValueError),
    ("eps", None, TypeError), ("eps", "0.1", TypeError), ("eps", True, TypeError),
    ("eps", 1j, TypeError), ("eps", [0.1], TypeError), ("eps", 10**400, ValueError),
    ("momentum", 1.5, ValueError), ("momentum", -0.1, ValueError),
    ("momentum", float("nan"), ValueError), ("momentum", "0.1", TypeError),
    ("momentum", False, TypeError), ("momentum", np.array(0.1), TypeError)])
def test_bad_eps_or_momentum_changes_nothing(name, value, error):
    """The error names the attribute; the module computes on as torch with the old options."""
    ours, ref = bn1d.BatchNorm1d(C, eps=0.01, momentum=0.3), torch.nn.BatchNorm1d(C, 0.01, 0.3)
    xs = _batches(3, seed=1)
    ours(xs[0])
    ref(torch.from_numpy(xs[0]))
    before = repr(ours)
    with pytest.raises(error, match=name):
        setattr(ours, name, value)
    assert repr(ours) == before and ours.eps == 0.01 and ours.momentum == 0.3
    for x in xs[1:]:
        np.testing.assert_allclose(ours(x), ref(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-5)
    _assert_state_equal(ours, ref)


# ---- options fixed at construction -----------------------------------------------------------

@pytest.mark.parametrize("name, values", [
    ("num_features", [C, C + 1, 3.0, None]), ("affine", [True, False, "no"]),
    ("track_running_stats", [True, False, 0]),
    ("dtype", ["float32", "float64", np.float32, torch.float32, None])])
def test_fixed_options_are_read_only(name, values):
    m = bn1d.BatchNorm1d(C)
    m(_batches(1)[0])
    before_state, before_repr, before = m.state_dict(), repr(m), getattr(m, name)
    for value in values:
        with pytest.raises(AttributeError, match=f"^{name}: fixed at construction"):
            setattr(m, name, value)
    assert getattr(m, name) == before and repr(m) == before_repr
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before_state[k])


def test_option_values():
    m = bn1d.BatchNorm1d(np.int64(4), eps=np.float32(0.5), momentum=None, affine=False,
                         track_running_stats=False, dtype="float64")
    assert (m.num_features, m.affine, m.track_running_stats, m.momentum) == (4, False, False, None)
    assert type(m.num_features) is np.int64 and type(m.eps) is np.float32  # as given
    assert m.dtype == np.float64 and isinstance(m.dtype, np.dtype)


@pytest.mark.parametrize("form, expected", [
    (np.float64, np.float64), (np.float32, np.float32), (np.dtype("float64"), np.float64),
    (np.dtype(np.float32), np.float32), (torch.float32, np.float32),
    (torch.float64, np.float64), ("float32", np.float32), ("float64", np.float64),
    (float, np.float64)])
def test_dtype_forms(form, expected):
    m = bn1d.BatchNorm1d(C, dtype=form)
    ref = torch.nn.BatchNorm1d(C, dtype=torch.float32 if expected == np.float32
                               else torch.float64)
    assert m.dtype == np.dtype(expected)
    assert m.weight.dtype == m.running_var.dtype == np.dtype(expected)
    x = _batches(1)[0].astype(expected)
    np.testing.assert_allclose(m(x), ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("form, error", [
    (torch.int32, ValueError), ("int64", ValueError), (np.int32, ValueError),
    ("complex64", ValueError), ("no-such-dtype", ValueError), (None, TypeError), (4, TypeError)])
def test_bad_dtype_forms(form, error):
    with pytest.raises(error, match="dtype"):
        bn1d.BatchNorm1d(C, dtype=form)


# ---- load_state_dict: torch's IncompatibleKeys --------------------------------------------

def _source_state():
    """A torch BatchNorm1d's state_dict() (an OrderedDict with torch's version metadata) after
    training steps with a random weight."""
    src = torch.nn.BatchNorm1d(C)
    with torch.no_grad():
        src.weight.uniform_(0.5, 1.5)
        src.bias.uniform_(-1, 1)
    for x in _batches(2, seed=3):
        src(torch.from_numpy(x))
    return src.state_dict()


def _variants():
    full = _source_state()
    assert full._metadata[""]["version"] == 2
    without_count = _source_state()
    del without_count["num_batches_tracked"]  # keeps the version metadata
    return {
        "full": full,
        "plain": dict(full),
        "no-weight": {k: v for k, v in full.items() if k != "weight"},
        "no-bias-var": {k: v for k, v in full.items() if k not in ("bias", "running_var")},
        "no-count-plain": {k: v for k, v in full.items() if k != "num_batches_tracked"},
        "no-count-versioned": without_count,
        "extra": OrderedDict([*full.items(), ("extra", torch.ones(2)),
                              ("layer.weight", torch.ones(C))]),
        "empty": {},
        "only-extra": {"other": torch.zeros(1)},
    }


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("variant", list(_variants()))
def test_load_state_dict_returns_torchs_keys(variant, strict, track, affine):
    state = _variants()[variant]
    ref = torch.nn.BatchNorm1d(C, affine=affine, track_running_stats=track)
    ours = bn1d.BatchNorm1d(C, affine=affine, track_running_stats=track)
    if track:  # a count that a load of 0 would change
        ref.num_batches_tracked.fill_(7)
        ours.num_batches_tracked = 7
    try:
        expected = ref.load_state_dict(state, strict=strict)
    except RuntimeError:
        with pytest.raises(ValueError, match="Error\\(s\\) in loading state_dict"):
            ours.load_state_dict(state, strict=strict)
        if track:
            assert ours.num_batches_tracked == 7
        return
    got = ours.load_state_dict(state, strict=strict)
    assert isinstance(got, bn1d.IncompatibleKeys) and isinstance(got, tuple)
    assert got.missing_keys == expected.missing_keys
    assert got.unexpected_keys == expected.unexpected_keys
    assert tuple(got) == (expected.missing_keys, expected.unexpected_keys)
    assert repr(got) == repr(expected).replace("_IncompatibleKeys", "IncompatibleKeys")
    assert str(got) == repr(got)
    _assert_state_equal(ours, ref)


def test_incompatible_keys_repr():
    assert repr(bn1d.IncompatibleKeys([], [])) == "<All keys matched successfully>"
    keys = bn1d.IncompatibleKeys(["weight"], ["x"])
    assert repr(keys) == "IncompatibleKeys(missing_keys=['weight'], unexpected_keys=['x'])"
    assert keys._fields == ("missing_keys", "unexpected_keys")


def test_strict_versioned_state_without_count_changes_nothing():
    m = bn1d.BatchNorm1d(C)
    m.num_batches_tracked = 7
    state = _variants()["no-count-versioned"]
    with pytest.raises(ValueError, match='Missing key\\(s\\) in state_dict: "num_batches_tracked"'):
        m.load_state_dict(state)
    assert m.num_batches_tracked == 7 and list(m.weight) == [1.0] * C


# ---- __version__, docstrings and stubs ---------------------------------------------------

def test_version():
    assert "__version__" in bn1d.__all__
    try:
        from bn1d import _version
    except ImportError:  # the build generated no _version.py: the compiled module's
        assert bn1d.__version__ == _bn1d.__version__
    else:
        assert bn1d.__version__ == _version.__version__
    assert isinstance(bn1d.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", bn1d.__version__) or bn1d.__version__ == "unknown"


def _documented():
    """The public objects whose docstrings help() shows."""
    objects = {"bn1d": bn1d, "bn1d._bn1d": _bn1d}
    public = {"bn1d": bn1d.__all__, "bn1d._bn1d": [n for n in dir(_bn1d) if n[0] != "_"]}
    for owner_name, names in public.items():
        for name in names:
            value = getattr(objects[owner_name], name)
            if callable(value):
                objects[f"{owner_name}.{name}"] = value
    for cls_name in ("bn1d.BatchNorm1d", "bn1d.GhostBatchNorm1d", "bn1d._bn1d.BatchNorm1d",
                     "bn1d._bn1d.GhostBatchNorm1d"):
        for cls in objects[cls_name].__mro__[:-1]:  # with the shared base class, not object
            for name, value in vars(cls).items():
                if not name.startswith("_") or (name == "__init__" and "_bn1d" in cls_name):
                    objects.setdefault(f"{cls_name}.{name}", value)
    return objects


def test_every_public_object_has_a_plain_docstring():
    objects = _documented()
    assert {"bn1d.save_file", "bn1d.load_file", "bn1d.IncompatibleKeys",
            "bn1d.BatchNorm1d.momentum", "bn1d._bn1d.BatchNorm1d.forward",
            "bn1d._bn1d.load_file"} <= set(objects)
    for name, value in objects.items():
        doc = value.__doc__
        assert doc and doc.strip(), f"{name} has no docstring"
    for name in ("bn1d", "bn1d._bn1d"):
        text = pydoc.render_doc(objects[name], renderer=pydoc.plaintext)
        for markup in ("@p ", "@brief", "@param", "@return", "///", "\\p "):
            assert markup not in text, f"help({name}) shows {markup!r}"
    assert "momentum" in pydoc.render_doc(bn1d.BatchNorm1d, renderer=pydoc.plaintext)


def _stub():
    with open(STUB, encoding="utf-8") as f:
        return ast.parse(f.read())


def _stub_names(body):
    """Names a stub body defines: functions (properties marked), classes, annotated names."""
    names = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            decorators = [ast.unparse(d) for d in getattr(node, "decorator_list", [])]
            if any(d.endswith(".setter") for d in decorators):
                continue
            names[node.name] = ("property" if "property" in decorators else
                                "class" if isinstance(node, ast.ClassDef) else "function", node)
        elif isinstance(node, ast.AnnAssign):
            names[node.target.id] = ("value", node)
    return names


def _runtime_kind(value):
    if isinstance(value, property):
        return "property"
    return "class" if isinstance(value, type) else "function" if callable(value) else "value"


def _parameters(signature_line):
    """Parameter names in a pybind11 signature line `name(a: T, b: U = 1) -> R`."""
    inside = signature_line[signature_line.index("(") + 1:signature_line.rindex(")")]
    return re.findall(r"(?:^|, )(\w+):", inside)


def test_stub_lists_exactly_what_the_compiled_module_exports():
    stub = _stub_names(_stub().body)
    exported = {n for n in dir(_bn1d) if not n.startswith("_")} | {"__version__"}
    assert set(stub) == exported
    for name, (kind, node) in stub.items():
        assert _runtime_kind(getattr(_bn1d, name)) == kind, name
        if kind == "function":
            line = getattr(_bn1d, name).__doc__.splitlines()[0]
            assert [a.arg for a in node.args.args] == _parameters(line), name
    for cls in ("BatchNorm1d", "GhostBatchNorm1d", "BFloat16Tensor"):
        public = (lambda n: not n.startswith("_") or n in ("__init__", "__repr__"))
        members = {n: v for n, v in _stub_names(stub[cls][1].body).items() if public(n)}
        # BFloat16Tensor has no constructor (bn1d builds them): its __init__ is Python's slot.
        runtime = {n: v for n, v in vars(getattr(_bn1d, cls)).items()
                   if public(n) and type(v).__name__ != "wrapper_descriptor"}
        assert set(members) - {"__repr__"} == set(runtime) - {"__repr__"}, cls
        for name, (kind, node) in members.items():
            assert _runtime_kind(runtime[name]) == kind, name
            if kind == "function":
                function = getattr(runtime[name], "__func__", runtime[name])  # staticmethod
                line = function.__doc__.splitlines()[0]
                assert [a.arg for a in node.args.args] == _parameters(line), name


def test_package_ships_the_typing_marker():
    assert os.path.isfile(os.path.join(ROOT, "python", "bn1d", "py.typed"))
