"""Build hook for sparsearch's compiled parts (sparse kernels under workers/runtime, one-pass
channel norms under spa, the kept-channel gather of surgery under onnx_graph).

Metadata is in pyproject.toml; this file only declares C extensions, which setuptools compiles
on install with the local compiler (never fetched prebuilt). The kernels pick AVX2/FMA or a
portable path at run time, so the build itself uses no -march flag; their threads are a pthreads
pool of their own (workers/runtime/csrc/thread_pool.h), not OpenMP.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

CSRC = os.path.join("workers", "runtime", "csrc")
HEADERS = [
    "vec_impl.h", "spmm_impl.h", "strips_impl.h", "depthwise_impl.h", "vec_end.h", "fused.h",
    "thread_pool.h", "dw3x3_s2.h", "depthwise_general.h",
]  # fmt: skip


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
            "-pthread",
        ],
        extra_link_args=["-pthread"],
    ),
    Extension(
        "spa._channel_norms",
        sources=[os.path.join("spa", "csrc", "channel_norms.c")],
        # Reassociation lets the compiler vectorise the sums; the order of float additions in a
        # channel norm does not matter for ranking channels.
        extra_compile_args=["-O3", "-std=gnu11", "-fno-math-errno", "-fassociative-math",
                            "-fno-signed-zeros", "-fno-trapping-math"],
    ),
    Extension(
        "onnx_graph._kept_gather",
        sources=[os.path.join("onnx_graph", "csrc", "kept_gather.c")],
        extra_compile_args=["-O3", "-std=gnu11"],
    ),
]

setup(ext_modules=ext_modules)
