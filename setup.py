"""Build hook for sparsearch's compiled parts (sparse kernels under workers/runtime, one-pass
channel norms under spa).

Metadata is in pyproject.toml; this file only declares C extensions, which setuptools compiles
on install with the local compiler (never fetched prebuilt). The kernels pick AVX2/FMA or a
portable path at run time, so the build itself uses no -march flag; OpenMP is used when the
compiler accepts -fopenmp and otherwise the kernels build single-threaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = os.path.join("workers", "runtime", "csrc")
HEADERS = ["vec_impl.h", "spmm_impl.h", "strips_impl.h", "depthwise_impl.h", "vec_end.h", "fused.h"]


def _compiler_accepts(compiler: list[str], flags: list[str]) -> bool:
    """True when the C compiler builds and links a tiny OpenMP program with these flags."""
    source = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as handle:
            handle.write(source)
        cmd = [*compiler, path, "-o", os.path.join(tmp, "probe"), *flags]
        try:
            return subprocess.run(cmd, capture_output=True, check=False).returncode == 0
        except OSError:
            return False


class BuildSparseKernels(build_ext):
    """Adds OpenMP flags only where the compiler supports them."""

    def build_extensions(self) -> None:
        compiler = list(getattr(self.compiler, "compiler_so", None) or ["cc"])
        use_openmp = os.environ.get("SPARSEARCH_NO_OPENMP") != "1" and _compiler_accepts(
            compiler[:1], ["-fopenmp"]
        )
        if not use_openmp:
            print(
                "sparsearch: building sparse kernels without OpenMP (single-threaded)",
                file=sys.stderr,
            )
        for ext in self.extensions:
            if use_openmp:
                ext.extra_compile_args = [*ext.extra_compile_args, "-fopenmp"]
                ext.extra_link_args = [*ext.extra_link_args, "-fopenmp"]
        super().build_extensions()


ext_modules = [
    Extension(
        "workers.runtime._sparse_kernels",
        sources=[os.path.join(CSRC, "sparse_kernels.c")],
        depends=[os.path.join(CSRC, name) for name in HEADERS],
        extra_compile_args=[
            "-O3",
            "-std=gnu11",
            "-ffp-contract=fast",
            "-fno-math-errno",
            "-Wno-psabi",
        ],
    ),
    Extension(
        "spa._channel_norms",
        sources=[os.path.join("spa", "csrc", "channel_norms.c")],
        # Reassociation lets the compiler vectorise the sums; the order of float additions in a
        # channel norm does not matter for ranking channels.
        extra_compile_args=["-O3", "-std=gnu11", "-fno-math-errno", "-fassociative-math",
                            "-fno-signed-zeros", "-fno-trapping-math"],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildSparseKernels})
