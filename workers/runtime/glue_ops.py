"""Cheap weight-free ops run in NumPy between kernel layers, so that a graph made only of them and
of kernel layers needs no onnxruntime segment (each segment costs a ``session.run``, tens of
microseconds, and copies its inputs). Registered like the weight layers in ``sparse_ops``.
"""

from __future__ import annotations

import numpy as np

from workers.runtime.sparse_ops import KernelLayer, register_sparse_op, unplanned


def _glue_layer(node, call) -> KernelLayer:
    """A weight-free layer: ``call(x)``, then the fused Relu/Clip if the executor adds one."""

    @unplanned
    def run(layer, x, threads, residual):
        y = call(x)
        return y if layer.clip is None else np.clip(y, layer.clip[0], layer.clip[1])

    return KernelLayer(node.name, node.op_type, node.input[0], node.output[0], None, None, run)


@register_sparse_op("GlobalAveragePool")
def global_average_pool_rule(node, initializers, fmt, min_sparsity):
    """Mean over every axis after the channels, kept as size-1 axes (float32, as onnxruntime).

    As a matrix-vector product with 1/size weights: BLAS is ~8x faster than ``ndarray.mean``
    on a (1280, 7 * 7) map (8 vs 67 microseconds).
    """

    def pool(x: np.ndarray) -> np.ndarray:
        planes = x.reshape(x.shape[0] * x.shape[1], -1)
        weights = np.full(planes.shape[1], 1.0 / max(planes.shape[1], 1), dtype=np.float32)
        return (planes.astype(np.float32, copy=False) @ weights).reshape(
            *x.shape[:2], *[1] * (x.ndim - 2)
        )

    return _glue_layer(node, pool)


@register_sparse_op("Flatten")
def flatten_rule(node, initializers, fmt, min_sparsity):
    """(d0 ... d_{axis-1}, rest) view of the input; a negative axis counts from the end."""
    axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1)

    def flatten(x: np.ndarray) -> np.ndarray:
        cut = axis if axis >= 0 else x.ndim + axis
        return x.reshape(int(np.prod(x.shape[:cut], dtype=np.int64)), -1)

    return _glue_layer(node, flatten)
