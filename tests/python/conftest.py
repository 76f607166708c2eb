# SPDX-License-Identifier: MIT
# Makes `import bn1d` work without installing. In order of preference: BN1D_PYTHONPATH (the build
# tree's python/ directory), PYTHONPATH / an installed package, then this repository's usual
# build directories (build/python/python from scripts/test-python.sh, build-py/python).
import importlib.util
import os
import sys

_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _add(path):
    if os.path.isfile(os.path.join(path, "bn1d", "__init__.py")):
        sys.path.insert(0, path)
        return True
    return False


_explicit = [p for p in os.environ.get("BN1D_PYTHONPATH", "").split(os.pathsep) if p]
for _p in reversed(_explicit):
    _add(_p)
if not _explicit and importlib.util.find_spec("bn1d") is None:
    for _d in ("build/python/python", "build-py/python"):
        if _add(os.path.join(_root, _d)):
            break
