#!/usr/bin/env bash
# Builds the Python module (pybind11) and runs its tests (pytest, torch as the oracle).
# Installs the Debian packages that are missing (apt-get, as root or through sudo).
#   BN1D_PYTHON_BUILD_DIR   build directory (default build/python); the package is assembled in
#                           $BN1D_PYTHON_BUILD_DIR/python/bn1d
#   extra arguments are passed to pytest, e.g.  scripts/test-python.sh -k repr
set -euo pipefail
cd "$(dirname "$0")/.."

# The C++ build's packages and the Python side's. The Debian python3 (/usr/bin/python3) is used
# throughout: it is the one python3-torch/numpy/pytest belong to.
scripts/install-deps.sh pybind11-dev python3-dev python3-numpy python3-pytest python3-torch

python=/usr/bin/python3
build="${BN1D_PYTHON_BUILD_DIR:-build/python}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBN1D_BUILD_PYTHON=ON \
  -DBN1D_BUILD_TESTS=OFF -DBN1D_BUILD_EXAMPLES=OFF -DPython3_EXECUTABLE="$python" >/dev/null
cmake --build "$build"
package_dir="$(cd "$build/python" && pwd)"
BN1D_PYTHONPATH="$package_dir" PYTHONPATH="$package_dir" "$python" -m pytest -q tests/python "$@"
