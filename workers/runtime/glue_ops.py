"""Cheap weight-free ops run in NumPy between kernel layers, so that a graph made only of them and
of kernel layers needs no onnxruntime segment (each segment costs a ``session.run``, tens of
microseconds, and copies its inputs). Registered like the weight layers in ``sparse_ops``.
"""

from __future__ import annotations

import numpy as np

from workers.runtime import kernels
from workers.runtime.sparse_ops import KernelLayer, register_sparse_op


def _glue_layer(node, prepare) -> KernelLayer:
    """A weight-free layer run by ``prepare(layer, shape, threads)``'s runner."""
    return KernelLayer(node.name, node.op_type, node.input[0], node.output[0], None, None, prepare)


@register_sparse_op("GlobalAveragePool")
def global_average_pool_rule(node, initializers, fmt, min_sparsity):
    """Mean over every axis after the channels, kept as size-1 axes, a fused Relu/Clip applied
    (one C loop: 7 microseconds for 1280 x 7 x 7 where NumPy's mean takes 67)."""

    def prepare(layer: KernelLayer, shape: tuple[int, ...], threads: int) -> kernels.Runner:
        planes, size = shape[0] * shape[1], int(np.prod(shape[2:], dtype=np.int64))
        out = layer.workspace.get("out", (*shape[:2], *[1] * (len(shape) - 2)))
        lo, hi = layer.clip if layer.clip is not None else (-np.inf, np.inf)
        average_pool = kernels.extension().average_pool

        def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
            average_pool(kernels.planned_input(x, shape), out, planes, size, lo, hi)
            return out

        return run

    return _glue_layer(node, prepare)


@register_sparse_op("Flatten")
def flatten_rule(node, initializers, fmt, min_sparsity):
    """(d0 ... d_{axis-1}, rest) view of the input; a negative axis counts from the end."""
    axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1)

    def prepare(layer: KernelLayer, shape: tuple[int, ...], threads: int) -> kernels.Runner:
        cut = axis if axis >= 0 else len(shape) + axis
        flat = (
            int(np.prod(shape[:cut], dtype=np.int64)),
            int(np.prod(shape[cut:], dtype=np.int64)),
        )
        clip = layer.clip

        def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
            y = x.reshape(flat)
            return y if clip is None else np.clip(y, clip[0], clip[1])

        return run

    return _glue_layer(node, prepare)
