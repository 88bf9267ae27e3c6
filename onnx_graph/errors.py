"""Errors sparsearch raises for bad input: each names the file, node or field at fault."""

from __future__ import annotations


class SparsearchError(Exception):
    """Base class of errors meant for the user (the CLI prints them as one line)."""


class ModelLoadError(SparsearchError):
    """A model file is missing, unreadable or not ONNX."""


class PlanError(SparsearchError):
    """A pruning plan names an unknown or frozen group, or removes every channel of one."""


class ValidationError(SparsearchError):
    """A pruned model failed strict shape inference, the checker or onnxruntime."""
