#!/usr/bin/env bash
# The installs users make, each used from a directory outside the checkout:
#   1. pip: `pip install --no-build-isolation` (offline, Debian's setuptools/wheel/pybind11-dev)
#      into a venv that sees Debian's numpy and torch; bn1d.__version__ and `pip show`; a parity
#      check against torch.nn.BatchNorm1d; `pip uninstall` leaves the venv's files as they were;
#      then `pip install --target DIR` imports with PYTHONPATH=DIR.
#   2. CMake: `cmake --install BUILD --prefix P` of the Python build (build/python, built here if
#      scripts/test-python.sh has not): every installed file is under P, and the Python package
#      in P's BN1D_PYTHON_INSTALL_DIR imports and runs.
# pip builds in the source tree (build/, python/bn1d.egg-info), so it is given a copy of the
# checkout's files (tracked and untracked, not ignored): the checkout stays as it was, and no
# earlier build's leftovers reach the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

scripts/install-deps.sh pybind11-dev python3-dev python3-numpy python3-torch python3-venv \
  python3-pip python3-setuptools python3-wheel

python=/usr/bin/python3
version=$(sed -nE 's/^project\(bn1d VERSION ([0-9.]+).*/\1/p' CMakeLists.txt)
[ -n "$version" ] || { echo "test-install: no 'project(bn1d VERSION' in CMakeLists.txt"; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/bn1d-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INDEX=1
package_files=$(find python/bn1d -maxdepth 1 -type f \
  \( -name '*.py' -o -name '*.pyi' -o -name py.typed \) -printf '%f\n' | sort)

# check_package PYTHON DIR: imports bn1d and bn1d.torch from DIR's package (run outside the
# checkout), checks the version and that every file of python/bn1d is there, runs the parity check.
check_package() {
  (cd "$work" && "$1" "$repo/scripts/test-install-check.py" "$2" "$version" "$package_files")
}

echo "== pip install --no-build-isolation into a venv (--system-site-packages)"
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' file; do if [ -e "$file" ]; then printf '%s\0' "$file"; fi; done |
  tar --null -T - -cf - | tar -xf - -C "$work/src"
venv="$work/venv"
"$python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip list >/dev/null  # pip's own first-run files, before the snapshot
(cd "$venv" && find . | sort) >"$work/venv-before.txt"
echo "(pip builds bn1d with CMake: a few minutes)"
"$venv/bin/python" -m pip install --no-build-isolation "$work/src"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')
check_package "$venv/bin/python" "$site"

show=$("$venv/bin/python" -m pip show bn1d)
echo "$show" | grep -E '^(Name|Version|Summary|License):'
field() { echo "$show" | sed -n "s/^$1: //p"; }
if ! [[ "$(field Name)" = bn1d && "$(field Version)" = "$version" && "$(field License)" = MIT &&
        "$(field Summary)" == *BatchNorm1d* ]]; then
  echo "test-install: pip show: expected bn1d $version, MIT, a summary"; exit 1
fi

"$venv/bin/python" -m pip uninstall -y bn1d
(cd "$venv" && find . | sort) >"$work/venv-after.txt"
if ! diff "$work/venv-before.txt" "$work/venv-after.txt"; then
  echo "test-install: pip uninstall left the venv changed (< before, > after)"
  exit 1
fi
echo "pip uninstall: the venv's files are those from before the install"

echo "== pip install --target"
"$venv/bin/python" -m pip install --no-build-isolation --no-deps --target "$work/target" "$work/src"
PYTHONPATH="$work/target" check_package "$python" "$work/target"

echo "== cmake --install --prefix"
build=build/python  # the configuration of scripts/test-python.sh: a no-op after it ran
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBN1D_BUILD_PYTHON=ON \
  -DBN1D_BUILD_TESTS=OFF -DBN1D_BUILD_EXAMPLES=OFF -DPython3_EXECUTABLE="$python" >/dev/null
cmake --build "$build"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
outside=$(grep -v "^$prefix/" "$build/install_manifest.txt" || true)
if [ -n "$outside" ]; then
  echo "test-install: cmake --install wrote outside the prefix $prefix:"; echo "$outside"; exit 1
fi
if ! diff <(sort "$build/install_manifest.txt") <(find "$prefix" -type f | sort); then
  echo "test-install: the files under the prefix are not those of install_manifest.txt"; exit 1
fi
python_dir=$(sed -n 's/^BN1D_PYTHON_INSTALL_DIR:STRING=//p' "$build/CMakeCache.txt")
case "$python_dir" in
  "" | /*) echo "test-install: BN1D_PYTHON_INSTALL_DIR is '$python_dir', not relative"; exit 1 ;;
esac
echo "$(wc -l <"$build/install_manifest.txt") files installed, all under the prefix;" \
  "the Python package in <prefix>/$python_dir"
PYTHONPATH="$prefix/$python_dir" check_package "$python" "$prefix/$python_dir"

echo "test-install: ok (pip into a venv and uninstall, pip --target, cmake --install --prefix)"
