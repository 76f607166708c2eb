#!/usr/bin/env bash
# Quick start 2: installs what is missing, builds everything and runs the whole test suite:
# the C++ tests (ctest), the quickstart, the demo, and a consumer project built against the
# installed library (CMake package and pkg-config).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== build"
# The benchmark is built (without peers) so that it keeps compiling; a tiny shape runs as a smoke test.
cmake --preset default -DBN1D_BUILD_TESTS=ON -DBN1D_BUILD_BENCH=ON -DBN1D_BENCH_PEERS=OFF >/dev/null
cmake --build --preset default

echo "== benchmark smoke run"
./build/default/bench/bn1d_bench --filter "(32,64)" | tail -n 4

echo "== examples"
./build/default/examples/bn1d_quickstart
./build/default/examples/bn1d_demo >/dev/null && echo "demo: ok"

echo "== install + find_package / pkg-config consumer"
prefix="$PWD/build/default/install-test"
rm -rf "$prefix"
cmake --install build/default --prefix "$prefix" >/dev/null
cmake -S tests/find-package -B build/default/find-package -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build build/default/find-package >/dev/null
./build/default/find-package/consumer
g++ -o build/default/find-package/consumer_pkgconfig tests/find-package/main.cpp \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs --static bn1d)
./build/default/find-package/consumer_pkgconfig

echo "== unit tests"
ctest --preset default -j2
