#!/usr/bin/env bash
# Installs the Debian packages bn1d needs to build and test, if any is missing.
# Usage: scripts/install-deps.sh [more packages...]   (as root, or with sudo available)
set -euo pipefail

# build and tests; clang, its libFuzzer and sanitizer runtimes, and clang-format for the
# hardening stages of scripts/test.sh; OpenMPI for bn1d::dist (SyncBatchNorm1d) and its tests;
# zlib for the demo (it reads data/digits.csv.gz); DLPack's header for the Python module's bfloat16
packages=(cmake ninja-build g++ pkg-config git libgtest-dev libgmock-dev nlohmann-json3-dev libhwy-dev
          clang clang-format
          openmpi-bin libopenmpi-dev zlib1g-dev libdlpack-dev "$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The runtimes belong to the default clang, whatever its version: asked of clang itself (can it
# link a fuzzer?); libclang-rt-dev is Debian's unversioned package for the default clang's.
fuzzer_links() {
  command -v clang++ >/dev/null 2>&1 &&
    echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
    clang++ -x c++ -fsanitize=fuzzer,address,undefined - -o /dev/null >/dev/null 2>&1
}
fuzzer_links || missing+=(libclang-rt-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing missing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
