"""workers package of sparsearch."""

from __future__ import annotations

import importlib
from typing import Any

# The runtime's public names, imported on first use (the compiled kernels load only then).
_RUNTIME_EXPORTS = (
    "LatencyBackend",
    "SparseExecutor",
    "compare_models",
    "get_backend",
    "list_backends",
    "measure_latency",
    "register_backend",
)

__all__: list[str] = ["runtime", *_RUNTIME_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "runtime":
        return importlib.import_module("workers.runtime")
    if name in _RUNTIME_EXPORTS:
        return getattr(importlib.import_module("workers.runtime"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
