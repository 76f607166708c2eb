# SPDX-License-Identifier: MIT
"""State files between torch and bn1d's C++ API and R package, through bn1d.save_file and
bn1d.load_file (no safetensors package), used by scripts/test-r.sh (excluded by .Rbuildignore).

    python3 interop_torch.py write <state> <data> <float32|float64>
        trains a torch.nn.BatchNorm1d (4 steps, momentum None), saves its state_dict() with
        bn1d.save_file, and writes <data> for `interop check` (C++) and `interop.R check` (R): an
        eval-mode "input", the "output" bn1d's Python module gives after loading <state> (first
        checked against torch's own eval output), and the options as metadata.
    python3 interop_torch.py check <state> <data>
        loads a state written by C++ or R with bn1d.load_file into torch.nn.BatchNorm1d and
        compares torch's eval output on <data>'s "input" with <data>'s "output".
Exit status 0 on success. torch and bn1d round differently in the last bits, so the comparisons
with torch allow 1e-12 (float64) and 1e-5 (float32) relative to the output's scale.
"""
import sys

import numpy as np
import torch

import bn1d
from interop import read_safetensors

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def close(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) <= TOLERANCE[dtype] * max(1.0, np.max(np.abs(b)))


def write(state_path, data_path, dtype_name):
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(7)
    m = torch.nn.BatchNorm1d(5, eps=1e-4, momentum=None).to(dtype)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    for _ in range(4):
        m(torch.randn(6, 5, 3, dtype=dtype) * 3 + 2)
    bn1d.save_file(m.state_dict(), state_path)
    m.eval()
    x = torch.randn(4, 5, 3, dtype=dtype) * 3 + 2
    ours = bn1d.BatchNorm1d(5, eps=1e-4, momentum=None, dtype=dtype_name)
    ours.load(state_path)
    ours.eval()
    # Column-major, the memory of an R array: the kernels C++ and R run on it (see interop.cpp).
    y = ours(np.asfortranarray(x.numpy()))
    with torch.no_grad():
        if not close(y, m(x).numpy(), dtype):
            print(f"bn1d loaded torch's state {state_path}: eval output DIFFERS from torch's")
            return 1
    meta = {"num_features": "5", "eps": "0.0001", "momentum": "None", "affine": "true",
            "track_running_stats": "true", "dtype": dtype_name}
    bn1d.save_file({"input": x, "output": np.ascontiguousarray(y)}, data_path, metadata=meta)
    print(f"torch wrote {state_path} (bn1d.save_file) and {data_path} ({dtype_name})")
    return 0


def check(state_path, data_path):
    data, meta = read_safetensors(data_path)
    dtype = getattr(torch, meta["dtype"])
    momentum = None if meta["momentum"] == "None" else float(meta["momentum"])
    m = torch.nn.BatchNorm1d(int(meta["num_features"]), eps=float(meta["eps"]),
                             momentum=momentum).to(dtype)
    state = {k: torch.from_numpy(v) for k, v in bn1d.load_file(state_path).items()}
    m.load_state_dict(state)
    m.eval()
    with torch.no_grad():
        y = m(torch.from_numpy(np.array(data["input"]))).numpy()  # a writable copy
    ok = close(y, data["output"], dtype)
    print(f"torch loaded {state_path} (bn1d.load_file): eval output "
          f"{'matches' if ok else 'DIFFERS from'} the writer's")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "write":
        sys.exit(write(*sys.argv[2:]))
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        sys.exit(check(*sys.argv[2:]))
    sys.exit("usage: interop_torch.py write <state> <data> <dtype> | check <state> <data>")
