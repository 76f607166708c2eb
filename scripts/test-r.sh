#!/usr/bin/env bash
# Builds and checks the R package (r/): R CMD build + R CMD check --no-manual against an installed
# bn1d, with the testthat tests run against the torch fixtures in tests/fixtures, then state-file
# interchange R <-> C++ (and R -> Python when a built Python package is given).
# Installs the Debian packages that are missing (apt-get, as root or through sudo).
#   BN1D_PREFIX        an installed bn1d to build against (e.g. build/default/install-test);
#                      default: configure, build and install one under $BN1D_R_BUILD_DIR
#   BN1D_JOBS          parallel compile jobs for the library (default: nproc)
#   BN1D_R_BUILD_DIR   work directory (default build/r): cmake/, install/, the tarball,
#                      bn1d.Rcheck/ and interop/
#   BN1D_PYTHONPATH    optional: a built Python package directory (e.g. build/python/python,
#                      see scripts/test-python.sh; run with /usr/bin/python3 and its numpy);
#                      when set, a state saved from R is also loaded with the Python API
# Fails when R CMD check reports an ERROR or a WARNING (NOTEs are printed, not fatal).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

scripts/install-deps.sh r-base-dev r-cran-rcpp r-cran-testthat

# Paths given relative to the repository root stay valid after the cd's below.
if [ -n "${BN1D_PYTHONPATH:-}" ]; then BN1D_PYTHONPATH="$(cd "$BN1D_PYTHONPATH" && pwd)"; fi

build="${BN1D_R_BUILD_DIR:-build/r}"
mkdir -p "$build"
build="$(cd "$build" && pwd)"

# ---- the C++ library ----------------------------------------------------------------------
if [ -n "${BN1D_PREFIX:-}" ]; then
  prefix="$(cd "$BN1D_PREFIX" && pwd)"
else
  cmake -S . -B "$build/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBN1D_BUILD_TESTS=OFF \
    -DBN1D_BUILD_EXAMPLES=OFF -DBN1D_BUILD_DIST=OFF >/dev/null
  cmake --build "$build/cmake" --parallel "${BN1D_JOBS:-$(nproc)}"
  cmake --install "$build/cmake" --prefix "$build/install" >/dev/null
  prefix="$build/install"
fi
pcdir=""
for d in "$prefix/lib/pkgconfig" "$prefix/lib64/pkgconfig" "$prefix"/lib/*/pkgconfig; do
  if [ -f "$d/bn1d.pc" ]; then pcdir="$d"; break; fi
done
[ -n "$pcdir" ] || { echo "test-r.sh: no bn1d.pc under $prefix" >&2; exit 1; }
export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export BN1D_FIXTURES="$repo/tests/fixtures"
echo "bn1d $(pkg-config --modversion bn1d) from $prefix"

# ---- R CMD build + R CMD check ------------------------------------------------------------
cd "$build"
# R CMD check looks the package's dependencies up in the configured CRAN mirror, which prints a
# warning without network access; an empty local repository answers instead.
mkdir -p no-repos/src/contrib
: >no-repos/src/contrib/PACKAGES
printf 'options(repos = c(local = "file://%s/no-repos"))\n' "$build" >Rprofile
export R_PROFILE_USER="$build/Rprofile"
rm -rf bn1d.Rcheck bn1d_*.tar.gz
R CMD build "$repo/r"
tarball="$(ls bn1d_*.tar.gz)"
check_log="$build/check.log"
set +e
R CMD check --no-manual "$tarball" 2>&1 | tee "$check_log"
check_rc=${PIPESTATUS[0]}
set -e
testthat_out="bn1d.Rcheck/tests/testthat.Rout"
if [ -f "$testthat_out" ]; then grep -E '^\[ FAIL' "$testthat_out" || true; fi
if [ "$check_rc" -ne 0 ] || grep -qE '^\* checking .*\.\.\. *(ERROR|WARNING)|^Status: .*(ERROR|WARNING)' \
    "$check_log"; then
  echo "test-r.sh: R CMD check reported an ERROR or WARNING (see $check_log)" >&2
  [ -f "$testthat_out.fail" ] && tail -n 60 "$testthat_out.fail" >&2
  exit 1
fi
# The tests must have run against the fixtures, not skipped them.
if grep -qE '^\[ .*SKIP [1-9]' "$testthat_out"; then
  echo "test-r.sh: testthat skipped tests (BN1D_FIXTURES=$BN1D_FIXTURES)" >&2
  exit 1
fi

# ---- state files: R <-> C++ (and R -> Python) ---------------------------------------------
# The package as R CMD check installed it.
export R_LIBS="$build/bn1d.Rcheck${R_LIBS:+:$R_LIBS}"
mkdir -p interop
cd interop
# shellcheck disable=SC2046  # pkg-config's flags are meant to split
g++ -std=c++20 -O2 "$repo/r/tools/interop.cpp" $(pkg-config --cflags --libs --static bn1d) \
  -o interop
for dtype in float64 float32; do
  ./interop write "cpp_state_$dtype.safetensors" "cpp_data_$dtype.safetensors" "$dtype"
  Rscript "$repo/r/tools/interop.R" check "cpp_state_$dtype.safetensors" \
    "cpp_data_$dtype.safetensors"
  Rscript "$repo/r/tools/interop.R" write "r_state_$dtype.safetensors" \
    "r_data_$dtype.safetensors" "$dtype"
  ./interop check "r_state_$dtype.safetensors" "r_data_$dtype.safetensors"
  if [ -n "${BN1D_PYTHONPATH:-}" ]; then
    PYTHONPATH="$BN1D_PYTHONPATH" /usr/bin/python3 "$repo/r/tools/interop.py" \
      "r_state_$dtype.safetensors" "r_data_$dtype.safetensors"
  fi
done
echo "test-r.sh: R package OK ($(grep -E '^Status:' "$check_log"))"
