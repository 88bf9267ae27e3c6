"""Accelerated runtime: honest latency measurement and compiled sparse kernels for ONNX models.

Submodules load lazily so that importing :mod:`workers.runtime` never needs the compiled
extension; ``kernels`` and ``executor`` raise an ImportError with a build hint when it is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LatencyBackend": "workers.runtime.latency",
    "LatencyComparison": "workers.runtime.latency",
    "LatencyStats": "workers.runtime.latency",
    "compare_latency": "workers.runtime.latency",
    "compare_models": "workers.runtime.latency",
    "get_backend": "workers.runtime.latency",
    "list_backends": "workers.runtime.latency",
    "measure_latency": "workers.runtime.latency",
    "register_backend": "workers.runtime.latency",
    "SparseExecutor": "workers.runtime.executor",
    "NMMatrix": "workers.runtime.nm_sparsity",
    "nm_mask": "workers.runtime.nm_sparsity",
    "pack_nm": "workers.runtime.nm_sparsity",
    "SparseMatrix": "workers.runtime.sparse_formats",
    "pack": "workers.runtime.sparse_formats",
    "sparsify": "workers.runtime.sparse_formats",
    "to_dense": "workers.runtime.sparse_formats",
    "spmm": "workers.runtime.kernels",
    "depthwise_conv2d": "workers.runtime.depthwise_kernels",
    "sparse_conv2d": "workers.runtime.kernels",
    "sparse_linear": "workers.runtime.kernels",
    "plan_conv_depthwise": "workers.runtime.depthwise_kernels",
    "plan_depthwise_conv2d": "workers.runtime.depthwise_kernels",
    "plan_sparse_conv2d": "workers.runtime.kernels",
    "plan_sparse_linear": "workers.runtime.kernels",
    "set_thread_spin": "workers.runtime.kernels",
    "CudaModuleRunner": "workers.runtime.cuda_runner",
    "CudaRunOptions": "workers.runtime.cuda_runner",
    "SemiStructuredPlan": "workers.runtime.semi_structured",
    "apply_two_four": "workers.runtime.semi_structured",
    "convert_semi_structured": "workers.runtime.semi_structured",
    "plan_semi_structured": "workers.runtime.semi_structured",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
