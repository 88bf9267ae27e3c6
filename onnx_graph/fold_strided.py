"""Fold the dynamo exporter's identity ``as_strided``: a Gather over a flattened tensor that copies it.

``torch.export`` turns some ``as_strided`` calls (a pooled ``[B, C, 1, 1]`` feature map in Swin and
ConvNeXt heads at small resolutions) into ``Gather(Reshape(x, [-1]), indices)`` with indices built
at run time from ``Range(batch)``. When those indices are exactly the row-major positions of ``x``,
the Gather is ``x`` itself, but it hides the channel axis from the analysis. This pass checks the
index arithmetic numerically (batch 3) and rewires the consumers to ``x``.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

_PROBE_BATCH = 3  # any batch other than 1 exposes a wrong batch stride


def fold_identity_gathers(graph: ir.Graph) -> int:
    """Replace identity flat-gathers by their source tensor; returns how many were folded."""
    folded = 0
    for node in list(graph):
        source = _identity_source(node)
        if source is None:
            continue
        output = node.outputs[0]
        if output.is_graph_output():
            continue
        data = node.inputs[0]
        flatten = data.producer() if data is not None else None
        ir.convenience.replace_all_uses_with(output, source)
        graph.remove(node, safe=True)
        if flatten is not None and not any(out.uses() for out in flatten.outputs):
            graph.remove(flatten, safe=True)
        folded += 1
    if folded:
        logger.info("folded %d identity as_strided gathers", folded)
    return folded


def _identity_source(node: ir.Node) -> ir.Value | None:
    if node.op_type != "Gather" or len(node.inputs) != 2:
        return None
    flat, indices = node.inputs
    flatten = flat.producer() if flat is not None else None
    if flatten is None or flatten.op_type != "Reshape" or len(flatten.inputs) < 2:
        return None
    target, source = flatten.inputs[1], flatten.inputs[0]
    if target is None or target.const_value is None or source is None:
        return None
    if target.const_value.numpy().reshape(-1).tolist() != [-1]:
        return None
    if source.shape is None or indices is None or node.outputs[0].shape is None:
        return None
    source_dims, output_dims = list(source.shape), list(node.outputs[0].shape)
    if len(source_dims) != len(output_dims) or not source_dims:
        return None
    if any(not isinstance(d, int) for d in source_dims[1:]) or source_dims[1:] != output_dims[1:]:
        return None  # only a dynamic batch on axis 0 is probed
    if isinstance(source_dims[0], int) != isinstance(output_dims[0], int) or (
        isinstance(source_dims[0], int) and source_dims[0] != output_dims[0]
    ):
        return None
    dims = [_PROBE_BATCH if not isinstance(d, int) else d for d in source_dims]
    try:
        index = _evaluate(indices, depth=8)
    except (ValueError, KeyError, TypeError):
        return None
    if index is None:
        return None
    expected = np.arange(int(np.prod(dims))).reshape(dims)
    if index.shape != expected.shape or not np.array_equal(index, expected):
        return None
    return source


def _evaluate(value: ir.Value, depth: int) -> np.ndarray | None:
    """Numpy value of a small index expression, with a run-time batch size set to the probe."""
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is None or depth == 0:
        return None
    op = node.op_type
    inputs = [v for v in node.inputs if v is not None]
    if op == "Range" and len(inputs) == 3:
        start, delta = _evaluate(inputs[0], depth - 1), _evaluate(inputs[2], depth - 1)
        limit = _batch_size(inputs[1])
        if start is None or delta is None or limit is None:
            return None
        return np.arange(int(start), limit, int(delta), dtype=np.int64)
    evaluated = [_evaluate(v, depth - 1) for v in inputs]
    arguments = [a for a in evaluated if a is not None]
    if len(arguments) != len(evaluated):
        return None
    if op in ("Add", "Mul", "Sub"):
        left, right = arguments
        return {"Add": np.add, "Mul": np.multiply, "Sub": np.subtract}[op](left, right)
    if op == "Unsqueeze":
        data, axes = arguments
        return np.expand_dims(data, tuple(int(a) for a in np.asarray(axes).reshape(-1)))
    if op == "Cast":
        return arguments[0]
    return None


def _batch_size(value: ir.Value) -> int | None:
    """The probe batch when ``value`` is ``Squeeze(Shape(x)[0:1])`` or ``Gather(Shape(x), 0)``."""
    node = value.producer()
    while node is not None and node.op_type in ("Squeeze", "Cast", "Gather"):
        data = node.inputs[0]
        node = data.producer() if data is not None else None
    if node is None or node.op_type != "Shape":
        return None
    start = node.attributes.get("start")
    return _PROBE_BATCH if start is None or int(start.value) == 0 else None
