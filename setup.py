"""Only the C extension lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

# optional: without a C compiler the install still succeeds and quant keeps its Numba kernels.
setup(ext_modules=[Extension("fp8port.quant._native", ["src/fp8port/quant/native.c"],
                             depends=["src/fp8port/quant/native_quant.h"],
                             extra_compile_args=["-O3", "-std=gnu11", "-fopenmp", "-Werror=implicit-function-declaration"],
                             extra_link_args=["-fopenmp"], optional=True)])
