"""Builds the compiled extensions fastad._core and fastad._replay from Cython (metadata is in pyproject.toml)."""
import os
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# GCC leaves the op rules (fastad/_rules.pxd: one branch per op) out of line
# in the replay's sweeps: too big for its default inlining limit. Inlined,
# the forward sweep takes 142 us instead of 260 on Rosenbrock 10k (the call
# and its register spills were a third of every row). Recording (_core)
# measured 5-10% slower with it, so only _replay gets it; other compilers
# skip it.
INLINE_RULES = "--param=max-inline-insns-single=2000"


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "unix" and self._accepts(INLINE_RULES):
            for ext in self.extensions:
                if ext.name == "fastad._replay":
                    ext.extra_compile_args.append(INLINE_RULES)
        super().build_extensions()

    def _accepts(self, flag):
        """Whether the C compiler compiles an empty file with flag, warning-free."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write("int main(void) { return 0; }\n")
            try:
                self.compiler.compile([src], output_dir=tmp, extra_postargs=[flag, "-Werror"])
            except Exception:
                return False
        return True


extensions = [
    Extension(
        f"fastad.{name}",
        [f"fastad/{name}.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=["/O2"] if sys.platform == "win32" else ["-O3"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in ("_core", "_replay")  # recording and the reverse sweep; replay of a trace
]

setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            "cdivision": True,  # C division: 1/0 is inf, as IEEE says, not ZeroDivisionError
        },
    ),
)
