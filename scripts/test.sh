#!/usr/bin/env bash
# Quick start 2: installs what is missing, then runs the whole test suite:
#   1. format check (clang-format, .clang-format)
#   2. Release build (warnings are errors): the C++ tests, quickstart, demo, a benchmark smoke run,
#      and consumer projects built against the installed library (CMake package, pkg-config);
#      the Python module and its differential suite against torch (scripts/test-python.sh);
#      the R package: R CMD check and state-file interchange (scripts/test-r.sh)
#   3. the C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (leaks included)
#   4. the threaded tests under ThreadSanitizer
#   5. each libFuzzer target for BN1D_FUZZ_SECONDS seconds (default 60) from the seed corpus
# BN1D_QUICK=1 stops after stage 2.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
stage() { echo; echo "== $*"; }

stage "format check"
git ls-files '*.cpp' '*.hpp' '*.h' | xargs clang-format --dry-run -Werror
echo "formatting: ok"

stage "release build"
# The benchmark is built (without peers) so that it keeps compiling; a tiny shape runs as a smoke test.
cmake --preset default -DBN1D_BUILD_TESTS=ON -DBN1D_BUILD_BENCH=ON -DBN1D_BENCH_PEERS=OFF >/dev/null
cmake --build --preset default

stage "benchmark smoke run"
./build/default/bench/bn1d_bench --filter "(32,64)" | tail -n 4
OMP_NUM_THREADS=1 OMPI_MCA_btl=self,tcp mpirun --oversubscribe --allow-run-as-root -np 2 \
  ./build/default/bench/bn1d_sync_bench --steps 3 | tail -n 3

stage "examples"
./build/default/examples/bn1d_quickstart
./build/default/examples/bn1d_demo >/dev/null && echo "demo: ok"

stage "install + find_package (bn1d, bn1d::dist) / pkg-config consumers"
prefix="$PWD/build/default/install-test"
rm -rf "$prefix"
cmake --install build/default --prefix "$prefix" >/dev/null
cmake -S tests/find-package -B build/default/find-package -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCONSUMER_WITH_DIST=ON >/dev/null
cmake --build build/default/find-package >/dev/null
./build/default/find-package/consumer
OMPI_MCA_btl=self,tcp mpirun --oversubscribe --allow-run-as-root -np 3 \
  ./build/default/find-package/consumer_dist
g++ -o build/default/find-package/consumer_pkgconfig tests/find-package/main.cpp \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs --static bn1d)
./build/default/find-package/consumer_pkgconfig

stage "unit tests"
ctest --preset default -j2

stage "Python module: differential suite against torch"
scripts/test-python.sh

stage "R package: R CMD check (testthat against the torch fixtures) + state files R <-> C++ <-> Python"
BN1D_PREFIX=build/default/install-test BN1D_PYTHONPATH=build/python/python scripts/test-r.sh

[ "${BN1D_QUICK:-0}" = "1" ] && exit 0

stage "unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake --preset asan >/dev/null
cmake --build --preset asan --target bn1d_tests
ctest --preset asan -j2

stage "threaded tests under ThreadSanitizer"
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target bn1d_tests
ctest --preset tsan

stage "fuzzing (libFuzzer + ASan + UBSan), ${BN1D_FUZZ_SECONDS:-60} s per target"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
export ASAN_OPTIONS=allocator_may_return_null=1
for target in safetensors validation; do
  work="build/fuzz/corpus-$target"
  mkdir -p "$work"
  seeds=("fuzz/corpus/$target")
  [ "$target" = safetensors ] && seeds+=(tests/fixtures)
  log="build/fuzz/fuzz_$target.log"
  if ! ./build/fuzz/fuzz/fuzz_$target -max_total_time="${BN1D_FUZZ_SECONDS:-60}" -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix=build/fuzz/ "$work" "${seeds[@]}" >"$log" 2>&1; then
    grep -v "^#" "$log" | tail -n 40
    echo "fuzz_$target: FAILED (input saved as build/fuzz/crash-*)"
    exit 1
  fi
  grep -E "^(Done|stat::peak_rss)" "$log"
  echo "fuzz_$target: no crash, leak or sanitizer report"
done
