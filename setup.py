"""Builds the C++ range coder; everything else about the package lives in pyproject.toml."""
import sys

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

# MSVC takes its own flags (and links threads by itself); GCC and Clang need -pthread, since
# bands are coded on threads of their own.
msvc = sys.platform == "win32"

setup(
    ext_modules=[
        Pybind11Extension(
            "pillow_unz._coder",
            ["csrc/bindings.cpp"],
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=["/O2"] if msvc else ["-O3", "-pthread"],
            extra_link_args=[] if msvc else ["-pthread"],
        )
    ]
)
