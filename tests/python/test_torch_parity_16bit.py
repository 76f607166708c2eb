# SPDX-License-Identifier: MIT
"""Proof of issue 18 for the torch adapter: a seeded random sweep of bfloat16 and float16
BatchNorm1d in both configurations, mixed (float32 module, 16-bit input) and pure (16-bit module
and input), against a float64 oracle: torch 1.13 computing in float64 on the same 16-bit inputs
and the same parameters and buffers (widened exactly).

Each case draws a shape ((N, C) or (N, C, L)), a layout (contiguous, channels-last, a strided
view), affine, track_running_stats and momentum (None included), and runs train, train, eval,
each a forward and a backward. Before every step the torch references get bn1d's current state,
so that every step compares the same computation on the same values.

What is asserted, per step and tensor (output, grad_input, grad_weight, grad_bias, running
statistics):
* bfloat16: bn1d's largest error against the oracle is never larger than torch 1.13 bfloat16's
  own (equality allowed). Where torch's largest error is 0, bn1d's must be 0 or, for a 16-bit
  tensor, at most 1 ulp of bfloat16 per element.
* every 16-bit tensor bn1d returns (output and grad_input in both configurations; in pure mode
  also grad_weight, grad_bias and the running statistics) is within 1 ulp of the oracle's value
  rounded to its dtype: bn1d rounds the float64 result once.
* float16 (which torch 1.13 cannot run on the CPU): the 1-ulp bound above; the float32 tensors
  of the mixed configuration against the oracle with float32 tolerances.
"""

import numpy as np
import pytest
import torch

import bn1d.torch as bt

CASES = 600  # per configuration: 4 configurations x 600 cases x 3 steps (~10 s)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _ordered(t):
    """The bits of a 16-bit tensor as integers in the order of the values (+0 and -0 equal)."""
    bits = t.detach().contiguous().view(torch.int16).numpy().astype(np.int64) & 0xFFFF
    return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)


def _ulps(got, exact):
    """Distance in ulps of got's 16-bit dtype between got and exact (float64) rounded once, 0
    where got is within the oracle's own float64 error of it: torch's float64 kernel gives
    2.2e-16 for an exact 0 (x equal to the mean), which bfloat16 can hold."""
    distance = np.abs(_ordered(got) - _ordered(exact.to(got.dtype)))
    slack = 1e-10 * max(1.0, float(exact.abs().max()) if exact.numel() else 0.0)
    within = ((got.detach().double() - exact.detach()).abs() <= slack).numpy()
    return np.where(within, 0, distance)


def _error(got, exact):
    return float((got.detach().double() - exact.detach()).abs().max()) if got.numel() else 0.0


def _case(rng):
    """A random case: shape, layout, options."""
    big = rng.random() < 0.1  # longer reductions now and then
    n, c = int(rng.integers(2, 65 if big else 17)), int(rng.integers(1, 7))
    shape = (n, c) if rng.random() < 0.4 else (n, c, int(rng.integers(1, 65 if big else 10)))
    return {"shape": shape, "layout": str(rng.choice(["contiguous", "channels_last", "strided"])),
            "affine": bool(rng.random() < 0.7), "track": bool(rng.random() < 0.7),
            "momentum": [0.1, None, 0.3][int(rng.integers(0, 3))],
            "mean": float(rng.normal(0, 4)), "scale": float(rng.uniform(0.1, 5))}


def _input(case, dtype, gen):
    """A 16-bit input of the case's shape and layout, a leaf that requires grad."""
    shape = case["shape"]
    values = (torch.randn(shape, generator=gen, dtype=torch.float64) * case["scale"]
              + case["mean"]).to(dtype)
    if case["layout"] == "channels_last":
        x = values.transpose(0, -1).contiguous().transpose(0, -1)
    elif case["layout"] == "strided":
        big = torch.zeros((shape[0] * 2,) + shape[1:-1] + (shape[-1] * 2,), dtype=dtype)
        x = big[::2, ..., ::2] if len(shape) == 3 else big[::2, ::2]
        x.copy_(values)
    else:
        x = values
    return x.detach().requires_grad_()


def _modules(case, config, dtype, gen):
    """bn1d's module (the adapter) with random parameters and buffers, in the configuration."""
    ours = bt.BatchNorm1d(case["shape"][1], momentum=case["momentum"], affine=case["affine"],
                          track_running_stats=case["track"])
    if config == "pure":
        ours = ours.to(dtype)
    c = case["shape"][1]
    with torch.no_grad():
        if case["affine"]:
            ours.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 2 - 0.5)
            ours.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        if case["track"]:
            ours.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
            ours.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
    return ours


def _reference(ours, dtype):
    """A torch.nn.BatchNorm1d with ours' options and a copy of its state, in dtype (the
    parameters' dtype for torch's 16-bit run, float64 for the oracle)."""
    ref = torch.nn.BatchNorm1d(ours.num_features, eps=ours.eps, momentum=ours.momentum,
                               affine=ours.affine, track_running_stats=ours.track_running_stats)
    ref = ref.to(dtype)
    ref.load_state_dict(ours.state_dict())  # copy_: exact widening for the oracle
    return ref.train(ours.training)


def _step(module, x, gy):
    """Output, grad_input, grad_weight, grad_bias and running statistics of one step."""
    x = x.detach().requires_grad_()
    y = module(x)
    y.backward(gy)
    out = {"output": y, "grad_input": x.grad}
    if module.affine:
        out["grad_weight"], out["grad_bias"] = module.weight.grad, module.bias.grad
    if module.track_running_stats:
        out["running_mean"] = module.running_mean.clone()
        out["running_var"] = module.running_var.clone()
    return out


def _check(case, step, name, ours, exact, theirs, config):
    where = f"{case} step {step} {name}"
    sixteen = ours.dtype in DTYPES.values()
    if sixteen:
        distance = _ulps(ours, exact)
        assert distance.max(initial=0) <= 1, f"{where}: {distance.max()} ulps"
    elif config == "mixed":  # float32 parameters' gradients and statistics
        np.testing.assert_allclose(ours.detach().double().numpy(), exact.detach().numpy(),
                                   rtol=2e-6, atol=2e-6 * max(1.0, float(exact.abs().max())),
                                   err_msg=where)
    if theirs is not None:
        ours_err, their_err = _error(ours, exact), _error(theirs, exact)
        assert ours_err <= their_err or (their_err == 0 and sixteen), \
            f"{where}: bn1d error {ours_err} > torch's {their_err}"


@pytest.mark.parametrize("config", ["mixed", "pure"])
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_parity_sweep(dtype_name, config):
    dtype = DTYPES[dtype_name]
    seed = 1800 + 10 * list(DTYPES).index(dtype_name) + (config == "pure")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(CASES):
        case = _case(rng)
        ours = _modules(case, config, dtype, gen)
        for step, training in enumerate((True, True, False)):
            ours.train(training)
            oracle = _reference(ours, torch.float64)
            # torch 1.13 has no CPU float16 batch norm: no torch run to compare with.
            param_dtype = dtype if config == "pure" else torch.float32
            theirs_module = _reference(ours, param_dtype) if dtype == torch.bfloat16 else None
            ours.zero_grad(set_to_none=True)
            x = _input(case, dtype, gen)
            gy = torch.randn(case["shape"], generator=gen, dtype=torch.float64).to(dtype)
            got = _step(ours, x, gy)
            exact = _step(oracle, x.detach().double(), gy.double())
            theirs = None if theirs_module is None else _step(theirs_module, x, gy)
            assert got["output"].dtype == dtype and got["grad_input"].dtype == dtype
            for name, value in got.items():
                _check(case, step, name, value, exact[name], None if theirs is None
                       else theirs[name], config)
