"""Only the C extension lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

# One source (kernels.h) compiled for every ISA tier of the target architecture inside native.c;
# optional: without a C compiler the install still succeeds and the Numba kernels run.
# -ffp-contract=off: no fused multiply-add may merge two products the reference rounds apart.
setup(
    ext_modules=[
        Extension(
            "fp8port.cpu._native",
            ["src/fp8port/cpu/native.c", "src/fp8port/cpu/gemm.c"],
            depends=[
                "src/fp8port/cpu/kernels.h",
                "src/fp8port/cpu/nvfp4_cells.h",
                "src/fp8port/cpu/avx512_e4m3.h",
                "src/fp8port/cpu/gemm.h",
                "src/fp8port/cpu/gemv1_avx2.h",
                "src/fp8port/cpu/gemm_bf16.h",
                "src/fp8port/cpu/gemm_amx.h",
                "src/fp8port/cpu/decode_bf16.h",
            ],
            extra_compile_args=[
                "-O3",
                "-std=gnu11",
                "-fopenmp",
                "-ffp-contract=off",
                "-Werror=implicit-function-declaration",
            ],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
    ]
)
