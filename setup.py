# SPDX-License-Identifier: MIT
"""Builds the Python package bn1d with CMake (pyproject.toml names setuptools as the backend).

build_ext configures bn1d with the Python module required and the tests, examples and bn1d::dist
off, builds only the _bn1d target, and copies the extension and the generated bn1d/_version.py
into the package; build_py copies python/bn1d's modules, stubs and py.typed. The version is the
one of project(bn1d VERSION ...) in CMakeLists.txt, the single source of truth.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.egg_info import egg_info

ROOT = os.path.dirname(os.path.abspath(__file__))


def project_version():
    """The VERSION of project(bn1d ...) in the root CMakeLists.txt."""
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as cmake_lists:
        match = re.search(r"project\(\s*bn1d\s+VERSION\s+([0-9][0-9.]*)", cmake_lists.read())
    if match is None:
        raise RuntimeError("CMakeLists.txt: no 'project(bn1d VERSION x.y.z' line")
    return match.group(1)


def pybind11_cmake_args():
    """-Dpybind11_DIR from the pybind11 Python package when it imports (pip's isolated build);
    otherwise CMake finds pybind11's own config (Debian: pybind11-dev)."""
    try:
        import pybind11
    except ImportError:
        return []
    return [f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]


class CMakeExtension(Extension):
    """The extension bn1d._bn1d, built by CMake rather than from a list of sources."""

    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds the _bn1d target; its files go into the package in build_lib."""

    def build_extension(self, ext):
        build_dir = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        configure = [
            "cmake", "-S", ROOT, "-B", build_dir,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DBN1D_BUILD_PYTHON=ON", "-DBN1D_PYTHON_REQUIRED=ON",
            "-DBN1D_BUILD_TESTS=OFF", "-DBN1D_BUILD_EXAMPLES=OFF",
            "-DBN1D_BUILD_DIST=OFF", "-DBN1D_BUILD_BENCH=OFF", "-DBN1D_BUILD_FUZZERS=OFF",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ] + pybind11_cmake_args()
        if shutil.which("ninja") and not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
            configure += ["-G", "Ninja"]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", build_dir, "--target", "_bn1d", "-j", jobs],
                       check=True)

        package_dir = os.path.join(build_dir, "python", "bn1d")
        built = os.path.join(package_dir, "_bn1d" + sysconfig.get_config_var("EXT_SUFFIX"))
        if not os.path.isfile(built):
            raise RuntimeError(f"CMake built no {built} (found: {sorted(os.listdir(package_dir))})")
        destination = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copyfile(built, destination)
        shutil.copyfile(os.path.join(package_dir, "_version.py"),
                        os.path.join(os.path.dirname(destination), "_version.py"))


class EggInfoInBuild(egg_info):
    """Writes bn1d.egg-info into build/ (which git ignores) rather than next to the package."""

    def finalize_options(self):
        if self.egg_base is None:
            os.makedirs("build", exist_ok=True)
            self.egg_base = "build"
        super().finalize_options()


setup(
    version=project_version(),
    packages=["bn1d"],
    package_dir={"": "python"},
    package_data={"bn1d": ["*.pyi", "py.typed"]},
    ext_modules=[CMakeExtension("bn1d._bn1d")],
    cmdclass={"build_ext": CMakeBuild, "egg_info": EggInfoInBuild},
    zip_safe=False,
)
