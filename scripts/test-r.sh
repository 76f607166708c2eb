#!/usr/bin/env bash
# Tests the R package (r/), which compiles bn1d's own sources when pkg-config finds no bn1d:
#   1. `R CMD INSTALL r` from the checkout with PKG_CONFIG_PATH unset (and no bn1d in
#      pkg-config's default path): the bundled route; the spec's example in a fresh Rscript;
#      the checkout is left clean (git status) and r/cleanup removes every build output
#   2. R CMD build (the tarball holds bn1d's sources as real files) + R CMD check --no-manual of
#      it, self-contained, with the testthat tests run against the torch fixtures in
#      tests/fixtures: Status: OK required
#   3. the pkg-config route: the tarball installed against an installed bn1d (the one given or
#      built below) gives the same bits as the bundled build
#   4. state-file interchange R <-> C++ (and, when a built Python package is given, R -> Python
#      and torch <-> C++, R through bn1d.save_file / bn1d.load_file)
# Installs the Debian packages that are missing (apt-get, as root or through sudo).
#   BN1D_PREFIX        an installed bn1d to build against (e.g. build/default/install-test);
#                      default: configure, build and install one under $BN1D_R_BUILD_DIR
#   BN1D_JOBS          parallel compile jobs (default: nproc; MAKEFLAGS, when set, for R's builds)
#   BN1D_R_BUILD_DIR   work directory (default build/r): cmake/, install/, lib-*/, the tarball,
#                      bn1d.Rcheck/ and interop/
#   BN1D_PYTHONPATH    optional: a built Python package directory (e.g. build/python/python,
#                      see scripts/test-python.sh; run with /usr/bin/python3 and its numpy);
#                      when set, a state saved from R is also loaded with the Python API, and
#                      torch's state files go to C++ and R and theirs back to torch
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

scripts/install-deps.sh r-base-dev r-cran-rcpp r-cran-testthat libhwy-dev nlohmann-json3-dev

# Paths given relative to the repository root stay valid after the cd's below.
if [ -n "${BN1D_PYTHONPATH:-}" ]; then BN1D_PYTHONPATH="$(cd "$BN1D_PYTHONPATH" && pwd)"; fi

build="${BN1D_R_BUILD_DIR:-build/r}"
mkdir -p "$build"
build="$(cd "$build" && pwd)"

# ---- the C++ library (the pkg-config route and the C++ side of the interchange) ------------
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
echo "bn1d $(PKG_CONFIG_PATH="$pcdir" pkg-config --modversion bn1d) installed in $prefix"

# R's builds (R CMD INSTALL runs make) compile in parallel through MAKEFLAGS.
export MAKEFLAGS="${MAKEFLAGS:--j${BN1D_JOBS:-$(nproc)}}"
export BN1D_FIXTURES="$repo/tests/fixtures"
# R CMD check looks the package's dependencies up in the configured CRAN mirror, which prints a
# warning without network access; an empty local repository answers instead.
mkdir -p "$build/no-repos/src/contrib"
: >"$build/no-repos/src/contrib/PACKAGES"
printf 'options(repos = c(local = "file://%s/no-repos"))\n' "$build" >"$build/Rprofile"
export R_PROFILE_USER="$build/Rprofile"
fail() { echo "test-r.sh: $*" >&2; exit 1; }

# ---- 1. R CMD INSTALL r from the checkout, no bn1d installed: bn1d's sources compiled in -------
if env -u PKG_CONFIG_PATH pkg-config --exists bn1d; then
  fail "pkg-config finds a bn1d in its default path ($(env -u PKG_CONFIG_PATH pkg-config \
--variable=pcfiledir bn1d)): the self-contained install cannot be tested"
fi
r/cleanup  # outputs of an earlier in-place install would be reused by make
status_before="$(git status --porcelain r)"  # a developer's own edits are not the install's
lib_bundled="$build/lib-bundled"
rm -rf "$lib_bundled" && mkdir -p "$lib_bundled"
env -u PKG_CONFIG_PATH R CMD INSTALL -l "$lib_bundled" r 2>&1 | tee "$build/install-bundled.log"
grep -q "compiling bn1d's sources into the package" "$build/install-bundled.log" ||
  fail "R CMD INSTALL r did not take the bundled route"
echo "test-r.sh: R CMD INSTALL r (PKG_CONFIG_PATH unset) compiled bn1d's sources into the package"
# The spec's example (R torch's nn_batch_norm1d documentation) in a fresh R, outside the checkout.
# shellcheck disable=SC2016  # R code, not shell
(cd "$build" && R_LIBS="$lib_bundled" Rscript -e '
library(bn1d)
set.seed(1)
# With Learnable Parameters
m <- nn_batch_norm1d(100)
# Without Learnable Parameters
m0 <- nn_batch_norm1d(100, affine = FALSE)
input <- matrix(rnorm(20 * 100), 20, 100)
output <- m(input)
# expected: the batch mean and biased variance of each channel, computed here in R
mu <- colMeans(input)
v <- colMeans(sweep(input, 2, mu)^2)
stopifnot(identical(dim(output), c(20L, 100L)),
          isTRUE(all.equal(output, sweep(sweep(input, 2, mu), 2, sqrt(v + 1e-5), "/"),
                           tolerance = 1e-12)),
          isTRUE(all.equal(m0(input), output, tolerance = 1e-12)), is.null(m0$weight))
cat("spec example: OK (bn1d", format(packageVersion("bn1d")), "from", find.package("bn1d"), ")\n")')
status="$(git status --porcelain r)"
[ "$status" = "$status_before" ] || fail "R CMD INSTALL r left files git sees in r/:
$(diff <(echo "$status_before") <(echo "$status"))"
r/cleanup
status="$(git status --porcelain --ignored r/src r/tools | grep '^!!' || true)"
[ -z "$status" ] || fail "r/cleanup left build outputs in r/:
$status"
echo "test-r.sh: checkout clean after R CMD INSTALL r (git status) and r/cleanup (--ignored)"

# ---- 2. R CMD build + R CMD check, self-contained -------------------------------------------
cd "$build"
rm -rf bn1d.Rcheck bn1d_*.tar.gz
R CMD build "$repo/r"
tarball="$(ls bn1d_*.tar.gz)"
listing="$(tar -tvzf "$tarball")"
sources="$(grep -E ' bn1d/tools/bn1d/' <<<"$listing")"
if grep -E '^l' <<<"$sources"; then fail "$tarball holds symlinks instead of bn1d's sources"; fi
if grep -E '/dist/' <<<"$sources"; then fail "$tarball holds bn1d's src/dist"; fi
for f in include/bn1d/bn1d.hpp src/module.cpp src/kernels/simd.cpp src/kernels/simd-inl.h; do
  grep -E "^-.* bn1d/tools/bn1d/$f\$" <<<"$sources" || fail "$tarball lacks tools/bn1d/$f"
done
echo "test-r.sh: $tarball holds $(grep -cE '^-' <<<"$sources") files of bn1d's sources"
check_log="$build/check.log"
set +e
env -u PKG_CONFIG_PATH R CMD check --no-manual "$tarball" 2>&1 | tee "$check_log"
check_rc=${PIPESTATUS[0]}
set -e
testthat_out="bn1d.Rcheck/tests/testthat.Rout"
if [ -f "$testthat_out" ]; then grep -E '^\[ FAIL' "$testthat_out" || true; fi
if [ "$check_rc" -ne 0 ] || ! grep -qE '^Status: OK$' "$check_log"; then
  [ -f "$testthat_out.fail" ] && tail -n 60 "$testthat_out.fail" >&2
  fail "R CMD check did not report Status: OK (see $check_log)"
fi
grep -q "compiling bn1d's sources into the package" bn1d.Rcheck/00install.out ||
  fail "R CMD check's install did not compile bn1d's sources"
# The tests must have run against the fixtures, not skipped them.
if grep -qE '^\[ .*SKIP [1-9]' "$testthat_out"; then
  fail "testthat skipped tests (BN1D_FIXTURES=$BN1D_FIXTURES)"
fi

# ---- 3. the pkg-config route: the tarball against the installed bn1d ------------------------
lib_installed="$build/lib-installed"
rm -rf "$lib_installed" && mkdir -p "$lib_installed"
PKG_CONFIG_PATH="$pcdir" R CMD INSTALL -l "$lib_installed" "$tarball" >"$build/install-pkgconfig.log" 2>&1 ||
  { cat "$build/install-pkgconfig.log" >&2; fail "R CMD INSTALL with PKG_CONFIG_PATH=$pcdir failed"; }
grep -E "found by pkg-config" "$build/install-pkgconfig.log" ||
  fail "R CMD INSTALL with PKG_CONFIG_PATH=$pcdir did not link the installed bn1d"
! grep -q "bn1d_lib/" "$build/install-pkgconfig.log" || fail "the pkg-config route compiled bn1d's sources"
# Both builds give the same bits (hexadecimal doubles) for a float32 and a float64 training step.
same_bits='library(bn1d); x <- array(sin(1:120) * 3 + 1, c(4, 5, 6)); cat(sprintf("%a",
  c(nn_batch_norm1d(5)(x), nn_batch_norm1d(5, dtype = "float32")(x))), sep = "\n")'
R_LIBS="$lib_installed" Rscript -e "$same_bits" >bits-installed.txt
R_LIBS="$build/bn1d.Rcheck" Rscript -e "$same_bits" >bits-bundled.txt
cmp bits-installed.txt bits-bundled.txt || fail "the pkg-config and bundled builds differ"
echo "test-r.sh: pkg-config route (PKG_CONFIG_PATH=$pcdir) OK, same bits as the bundled build"

# ---- 4. state files: R <-> C++ (and R -> Python) --------------------------------------------
# The package as R CMD check installed it (bundled); the C++ side links the installed library.
export R_LIBS="$build/bn1d.Rcheck${R_LIBS:+:$R_LIBS}"
mkdir -p interop
cd interop
# shellcheck disable=SC2046  # pkg-config's flags are meant to split
g++ -std=c++20 -O2 "$repo/r/tools/interop.cpp" \
  $(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs --static bn1d) -o interop
for dtype in float64 float32; do
  ./interop write "cpp_state_$dtype.safetensors" "cpp_data_$dtype.safetensors" "$dtype"
  Rscript "$repo/r/tools/interop.R" check "cpp_state_$dtype.safetensors" \
    "cpp_data_$dtype.safetensors"
  Rscript "$repo/r/tools/interop.R" write "r_state_$dtype.safetensors" \
    "r_data_$dtype.safetensors" "$dtype"
  ./interop check "r_state_$dtype.safetensors" "r_data_$dtype.safetensors"
  if [ -n "${BN1D_PYTHONPATH:-}" ]; then
    py() { PYTHONPATH="$BN1D_PYTHONPATH" /usr/bin/python3 "$@"; }
    py "$repo/r/tools/interop.py" "r_state_$dtype.safetensors" "r_data_$dtype.safetensors"
    # torch's state_dict() through bn1d.save_file into C++ and R, and theirs back into torch.
    py "$repo/r/tools/interop_torch.py" write "torch_state_$dtype.safetensors" \
      "torch_data_$dtype.safetensors" "$dtype"
    ./interop check "torch_state_$dtype.safetensors" "torch_data_$dtype.safetensors"
    Rscript "$repo/r/tools/interop.R" check "torch_state_$dtype.safetensors" \
      "torch_data_$dtype.safetensors"
    py "$repo/r/tools/interop_torch.py" check "r_state_$dtype.safetensors" "r_data_$dtype.safetensors"
    py "$repo/r/tools/interop_torch.py" check "cpp_state_$dtype.safetensors" \
      "cpp_data_$dtype.safetensors"
  fi
done
echo "test-r.sh: R package OK ($(grep -E '^Status:' "$check_log"))"
