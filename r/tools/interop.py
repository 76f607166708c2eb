# SPDX-License-Identifier: MIT
"""Loads a state saved from R with the Python API, used by scripts/test-r.sh (not part of the R
package: excluded by .Rbuildignore).

    PYTHONPATH=<built bn1d Python package> python3 interop.py <state> <data>

<data> (written by tools/interop.R) holds an eval-mode "input", R's "output" and the module's
options as metadata. Exit status 0 when the Python module's eval output is identical to R's.
The input is given in the column-major memory layout R arrays have, so that the same kernels run
and the comparison can be bitwise (kernels chosen for other layouts may round the last bit
differently).
"""
import json
import struct
import sys

import numpy as np

import bn1d

DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8"}


def read_safetensors(path):
    """name -> numpy array, and the metadata (struct + json, as tests/reference/generate.py)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        start, end = h["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=DTYPES[h["dtype"]]).reshape(h["shape"])
    return out, meta


def main(state_path, data_path):
    data, meta = read_safetensors(data_path)
    momentum = None if meta["momentum"] == "None" else float(meta["momentum"])
    m = bn1d.BatchNorm1d(int(meta["num_features"]), eps=float(meta["eps"]), momentum=momentum,
                         affine=meta["affine"] == "true",
                         track_running_stats=meta["track_running_stats"] == "true",
                         dtype=meta["dtype"])
    m.load(state_path)
    m.eval()
    y = m(np.asfortranarray(data["input"]))
    n = int(np.sum(y != data["output"]))
    print(f"Python loaded R's state {state_path}: eval output "
          f"{'identical to' if n == 0 else 'DIFFERS from'} R's ({n} of {y.size} elements differ)")
    return 0 if n == 0 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
