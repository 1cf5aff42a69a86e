"""Builds the compiled extensions fastad._core and fastad._replay from Cython (metadata is in pyproject.toml)."""
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# The replay's loop sweeps (fastad/_loop_sweeps.pxd) are short strided C
# loops that GCC unrolls only when asked: Rosenbrock 10k, Trace.values 53 ->
# 47 us, Trace.hvp 780 -> 634 us. The recording core is left as it was (its
# speed moves with code placement: fastad/_record.pxi).
UNROLL = {"_replay": ["-funroll-loops"]}
# Gradients are the same bits however they are swept (the loop sweeps against
# the row-by-row ones, the replay against the tape's own sweep): no fused
# multiply-add, which GCC would place differently in each (aarch64 has it in
# its base instruction set; x86-64 builds without -march have none anyway).
EXACT = ["-ffp-contract=off"]

extensions = [
    Extension(
        f"fastad.{name}",
        [f"fastad/{name}.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=["/O2"] if sys.platform == "win32" else ["-O3"] + EXACT + UNROLL.get(name, []),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in ("_core", "_replay")  # recording and the reverse sweep; replay of a trace
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            "cdivision": True,  # C division: 1/0 is inf, as IEEE says, not ZeroDivisionError
        },
    )
)
