#!/usr/bin/env bash
# Quick start 1: installs what is missing, builds bn1d and runs the demo (the same MLP trained
# with and without BatchNorm1d on the UCI handwritten digits over 5 seeds; learning curves in
# build/default/demo.svg). Arguments go to the demo: scripts/demo.sh --help lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset default -DBN1D_BUILD_TESTS=OFF >/dev/null
cmake --build --preset default --target bn1d_demo
./build/default/examples/bn1d_demo "$@"
