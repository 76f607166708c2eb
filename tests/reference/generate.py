#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Generates the torch.nn.BatchNorm1d reference fixtures in tests/fixtures/.

Run from the repository root with a Python that has torch (no other dependency):

    python3 tests/reference/generate.py

For every configuration in CONFIGS it builds a real torch.nn.BatchNorm1d, sets random affine
parameters, runs three training steps, one training backward, one eval step and one eval
backward, and writes the inputs, outputs, gradients and the final state dict to one small
safetensors file (written here with struct + json; the `safetensors` package is not needed).
See tests/fixtures/README.md for the keys. The script is deterministic: every configuration
seeds torch's generator with its own seed, so re-running it reproduces the files byte for byte
with the same torch build.
"""

import json
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "fixtures"))

TRAIN_STEPS = 3

# name, train shape (N, C) or (N, C, L), eval batch size N (None: same as training), dtype,
# module options, channels_last (3-D input created as (N, L, C) and passed transposed).
CONFIGS = [
    dict(name="f32_2d_default", shape=(8, 5), dtype=torch.float32),
    dict(name="f32_3d_channels_last", shape=(4, 3, 6), dtype=torch.float32, channels_last=True),
    dict(name="f64_3d", shape=(5, 4, 7), dtype=torch.float64),
    dict(name="f64_2d_cumulative", shape=(6, 3), dtype=torch.float64, momentum=None),
    dict(name="f32_3d_no_affine", shape=(4, 5, 3), dtype=torch.float32, affine=False),
    dict(name="f32_2d_no_running_stats", shape=(10, 4), dtype=torch.float32,
         track_running_stats=False),
    dict(name="f64_3d_eps1e-3_momentum0.5", shape=(3, 2, 5), dtype=torch.float64, eps=1e-3,
         momentum=0.5),
    dict(name="f32_3d_wide", shape=(16, 32, 10), dtype=torch.float32, eval_batch=4),
    dict(name="f64_3d_no_affine_no_running_stats", shape=(2, 3, 4), dtype=torch.float64,
         affine=False, track_running_stats=False),
    dict(name="f32_2d_cumulative_pair", shape=(2, 6), dtype=torch.float32, momentum=None),
]

DTYPE_CODES = {torch.float32: ("F32", "<f4"), torch.float64: ("F64", "<f8"),
               torch.int64: ("I64", "<i8"), torch.float16: ("F16", "<f2"),
               torch.bfloat16: ("BF16", "<i2")}  # bfloat16: its bits, as numpy has no bfloat16

# 16-bit state dicts (torch.nn.BatchNorm1d(...).bfloat16() / .half() after float32 training), in
# tests/fixtures/state16/ (not TorchFixture files: no inputs, outputs or gradients).
STATE16_CONFIGS = [
    dict(name="state16/bn_bfloat16", dtype=torch.bfloat16, channels=5),
    dict(name="state16/bn_float16", dtype=torch.float16, channels=4),
]
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


def write_safetensors(path, tensors, metadata):
    """Writes an ordered dict name -> tensor as safetensors (little-endian, no holes)."""
    header = {}
    chunks = []
    offset = 0
    for name, t in tensors.items():
        code, np_dtype = DTYPE_CODES[t.dtype]
        t = t.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        data = t.numpy().astype(np_dtype, copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    return 8 + len(text) + offset


def random_input(shape, dtype, offsets, scales, channels_last):
    """Random input with per-channel offsets and scales; returns the tensor passed to torch."""
    n, c = shape[0], shape[1]
    if len(shape) == 2:
        x = torch.randn(n, c, dtype=torch.float64) * scales + offsets
        return x.to(dtype)
    length = shape[2]
    if channels_last:
        x = torch.randn(n, length, c, dtype=torch.float64) * scales + offsets  # (N, L, C)
        x = x.to(dtype).transpose(1, 2)                                      # (N, C, L) view
        assert not x.is_contiguous()
        return x
    x = torch.randn(n, c, length, dtype=torch.float64) * scales[:, None] + offsets[:, None]
    return x.to(dtype)


def record_grads(out, stage, x, y, params, shape, dtype):
    """Gradients of sum(y * gy) for a random gy, under the keys '<stage>.grad_*'."""
    gy = torch.randn(shape, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(y, [x] + params, gy)
    out[f"{stage}.grad_output"] = gy
    out[f"{stage}.grad_input"] = grads[0].contiguous()
    if params:
        out[f"{stage}.grad_weight"] = grads[1]
        out[f"{stage}.grad_bias"] = grads[2]


def generate(index, cfg):
    torch.manual_seed(20240 + index)
    shape = cfg["shape"]
    dtype = cfg["dtype"]
    c = shape[1]
    eps = cfg.get("eps", 1e-5)
    momentum = cfg.get("momentum", 0.1)
    affine = cfg.get("affine", True)
    track = cfg.get("track_running_stats", True)
    channels_last = cfg.get("channels_last", False)
    eval_shape = (cfg.get("eval_batch") or shape[0],) + tuple(shape[1:])

    bn = torch.nn.BatchNorm1d(c, eps=eps, momentum=momentum, affine=affine,
                              track_running_stats=track).to(dtype)
    out = {}
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.empty(c, dtype=torch.float64).uniform_(0.5, 1.5).to(dtype))
            bn.bias.copy_(torch.randn(c, dtype=torch.float64).to(dtype))
        out["init.weight"] = bn.weight.detach().clone()
        out["init.bias"] = bn.bias.detach().clone()

    # Per-channel offsets and scales so that mean and variance differ by channel.
    offsets = torch.randn(c, dtype=torch.float64) * 3.0
    scales = torch.empty(c, dtype=torch.float64).uniform_(0.5, 3.0)

    params = [bn.weight, bn.bias] if affine else []
    bn.train()
    for k in range(TRAIN_STEPS):
        x = random_input(shape, dtype, offsets, scales, channels_last).requires_grad_(True)
        y = bn(x)
        out[f"train.input.{k}"] = x.detach().contiguous()
        out[f"train.output.{k}"] = y.detach().clone()
        if k == TRAIN_STEPS - 1:
            record_grads(out, "train", x, y, params, shape, dtype)

    bn.eval()
    x = random_input(eval_shape, dtype, offsets, scales, channels_last).requires_grad_(True)
    y = bn(x)
    out["eval.input"] = x.detach().contiguous()
    out["eval.output"] = y.detach().clone()
    record_grads(out, "eval", x, y, params, eval_shape, dtype)

    # The module's full state dict, as one layer of a larger model, plus another layer.
    for key, value in bn.state_dict().items():
        out["bn." + key] = value.detach().clone()
    out["other.weight"] = torch.randn(3, 2, dtype=torch.float32)

    metadata = {
        "num_features": c,
        "eps": repr(float(eps)),
        "momentum": "None" if momentum is None else repr(float(momentum)),
        "affine": "true" if affine else "false",
        "track_running_stats": "true" if track else "false",
        "dtype": DTYPE_NAMES[dtype],
        "shape": json.dumps(list(shape)),
        "eval_shape": json.dumps(list(eval_shape)),
        "train_steps": TRAIN_STEPS,
        "input_layout": "channels_last" if channels_last else "contiguous",
        "torch_version": torch.__version__,
        "generator": "tests/reference/generate.py",
    }
    path = os.path.join(OUT_DIR, cfg["name"] + ".safetensors")
    size = write_safetensors(path, out, metadata)
    return path, size, list(out.keys())


def generate_state16(index, cfg):
    """A float32 module trained for TRAIN_STEPS steps, converted with .bfloat16() or .half(); its
    state_dict() under "bn.", a tensor of special values under "special", and every 16-bit tensor
    widened by torch to float64 under "expected." + its key (exact: the oracle for readers)."""
    torch.manual_seed(20300 + index)
    c = cfg["channels"]
    bn = torch.nn.BatchNorm1d(c)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    offsets = torch.randn(c) * 3.0
    for _ in range(TRAIN_STEPS):
        bn(torch.randn(8, c) * 2.0 + offsets)
    dtype = cfg["dtype"]
    info = torch.finfo(dtype)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), info.max,
                            -info.max, info.tiny, info.tiny * info.eps, 1.0 / 3.0],
                           dtype=torch.float64).to(dtype)
    out = {"bn." + key: value.detach().clone() for key, value in bn.to(dtype).state_dict().items()}
    out["special"] = special
    for key in [k for k, v in out.items() if v.dtype == dtype]:
        out["expected." + key] = out[key].double()
    metadata = {"dtype": str(dtype).replace("torch.", ""), "num_features": c,
                "torch_version": torch.__version__, "generator": "tests/reference/generate.py"}
    path = os.path.join(OUT_DIR, cfg["name"] + ".safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    size = write_safetensors(path, out, metadata)
    return path, size, list(out.keys())


def main():
    torch.set_num_threads(1)  # deterministic reduction order inside torch's CPU kernels
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for i, cfg in enumerate(CONFIGS):
        path, size, keys = generate(i, cfg)
        total += size
        print(f"wrote {os.path.relpath(path)} ({size} bytes): {', '.join(keys)}")
    for i, cfg in enumerate(STATE16_CONFIGS):
        path, size, keys = generate_state16(i, cfg)
        total += size
        print(f"wrote {os.path.relpath(path)} ({size} bytes): {', '.join(keys)}")
    count = len(CONFIGS) + len(STATE16_CONFIGS)
    print(f"torch {torch.__version__}: {count} fixtures, {total} bytes in total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
