"""Builds the C++ range coder; everything else about the package lives in pyproject.toml."""
from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

setup(
    ext_modules=[
        Pybind11Extension(
            "pillow_unz._coder",
            ["csrc/bindings.cpp"],
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],  # bands are coded on threads of their own
        )
    ]
)
