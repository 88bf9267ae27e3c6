"""Turn run-time Reshape targets of dynamic-batch graphs into constants with -1 for the batch entry.

Exporters compute Reshape targets from ``Shape`` at run time so that the batch can vary: the legacy
TorchScript exporter writes ``[B, T, 4, C / 4]`` with ``C`` read from another tensor, the dynamo
exporter ``Concat(Shape(k)[:2], ...)``. Such entries would read stale sizes after pruning. This pass
resolves every computed target at batch 1 and at batch 2: entries equal in both are constants, and
the single entry that follows the batch becomes -1 (inferred at run time). The graph then computes
the same thing for every batch, and the Reshape rule rewrites plain constants.

The targets are resolved by ONNX shape inference with data propagation on the weight-free skeleton
(the Reshape's inferred output shape is its resolved target); only targets that inference cannot
resolve are evaluated by running the model in onnxruntime, which costs a full forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import onnx
import onnx_ir as ir

from onnx_graph.shape_subgraph import as_constant, symbolic_entries
from onnx_graph.static_shapes import Shapes, batch_symbols, inferred_shapes

logger = logging.getLogger(__name__)


class ReshapeTargets(NamedTuple):
    """What ``constant_reshape_targets`` did."""

    replaced: int  # computed targets now constants
    evaluated: int  # targets shape inference could not resolve (run in onnxruntime)


def constant_reshape_targets(
    model: ir.Model, shapes: Mapping[int, Shapes | None] | None = None
) -> ReshapeTargets:
    """Replace computed Reshape targets by constants where at most one entry follows the batch.

    Args:
        model: Changed in place.
        shapes: Inferred shapes at batch 1 and 2 (``static_shapes.inferred_shapes``), when the
            caller has them already.

    Models whose inputs have no symbolic dimension, or that onnxruntime cannot run, are left
    unchanged.
    """
    computed = computed_reshapes(model)
    if not computed:
        return ReshapeTargets(0, 0)
    # Targets that only move dims of known shapes around are read off the graph directly.
    symbols = batch_symbols(model)
    replacements: dict[ir.Node, np.ndarray] = {}
    for node in computed:
        entries = symbolic_entries(node.inputs[1])
        constant = as_constant(entries, symbols) if entries is not None else None
        if constant is not None:
            replacements[node] = constant
    reshapes = [n for n in computed if n not in replacements]
    if not reshapes:
        return ReshapeTargets(_replace_targets(model, replacements), 0)
    if shapes is None:
        shapes = inferred_shapes(model, (1, 2))
    resolved = {batch: _resolved_outputs(reshapes, shapes.get(batch)) for batch in (1, 2)}
    unresolved = sorted(
        {_target_name(n) for n in reshapes if any(n not in r for r in resolved.values())}
    )
    evaluated: dict[int, dict[str, np.ndarray]] = {1: {}, 2: {}}
    if unresolved:
        try:
            evaluated = {batch: _evaluate(model, unresolved, batch) for batch in (1, 2)}
        except Exception as error:  # onnxruntime raises its own error types
            logger.info("could not evaluate reshape targets (%s); they stay computed", error)
    for node in reshapes:
        name = _target_name(node)
        first = resolved[1].get(node, evaluated[1].get(name))
        second = resolved[2].get(node, evaluated[2].get(name))
        if first is None or second is None or first.shape != second.shape:
            continue
        follows_batch = first != second
        if follows_batch.sum() > 1 or (follows_batch.any() and (first == -1).any()):
            continue
        constant = first.astype(np.int64).copy()
        constant[follows_batch] = -1
        replacements[node] = constant
    return ReshapeTargets(_replace_targets(model, replacements), len(unresolved))


def _replace_targets(model: ir.Model, replacements: dict[ir.Node, np.ndarray]) -> int:
    """Give each Reshape its constant target and drop the shape subgraphs nothing reads now."""
    old_targets = []
    for node, constant in replacements.items():
        name = _target_name(node)
        old_targets.append(node.inputs[1])
        node.replace_input_with(1, _initializer(model.graph, f"{name}__constant", constant))
    for target in old_targets:
        _remove_if_unused(model.graph, target)
    if replacements:
        logger.info("replaced %d computed reshape targets by constants", len(replacements))
    return len(replacements)


def _remove_if_unused(graph: ir.Graph, value: ir.Value | None) -> None:
    """Remove the producer of ``value`` and, recursively, its inputs' producers once unused.

    Only the backward cone of the old targets is visited: the Shape reads there would otherwise
    still look like uses of channel axes.
    """
    pending = [value]
    while pending:
        current = pending.pop()
        if current is None or current.uses() or current.is_graph_output():
            continue
        node = current.producer()
        if node is None or any(out.uses() or out.is_graph_output() for out in node.outputs):
            continue
        inputs = list(node.inputs)
        graph.remove(node, safe=True)
        pending.extend(inputs)


def computed_reshapes(model: ir.Model) -> list[ir.Node]:
    """Reshape nodes whose target is computed at run time (not an initializer)."""
    return [
        n
        for n in model.graph
        if n.op_type == "Reshape"
        and len(n.inputs) > 1
        and n.inputs[1] is not None
        and n.inputs[1].const_value is None
        and n.inputs[1].name
    ]


def _target_name(node: ir.Node) -> str:
    target = node.inputs[1]
    assert target is not None and target.name is not None
    return target.name


def _resolved_outputs(reshapes: list[ir.Node], shapes: Shapes | None) -> dict[ir.Node, np.ndarray]:
    """Output shapes of ``reshapes`` that shape inference resolved completely."""
    resolved: dict[ir.Node, np.ndarray] = {}
    if shapes is None:
        return resolved
    for node in reshapes:
        dims = shapes.get(node.outputs[0].name or "")
        if dims is not None and all(isinstance(d, int) and d > 0 for d in dims):
            resolved[node] = np.array(dims, dtype=np.int64)
    return resolved


def _evaluate(model: ir.Model, names: list[str], batch: int) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    proto = ir.to_proto(model)
    del proto.graph.output[:]
    for name in names:
        proto.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None)
        )
    feeds = {}
    for graph_input in proto.graph.input:
        tensor_type = graph_input.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feeds[graph_input.name] = np.zeros(dims, dtype=dtype) + (0.5 if dtype.kind == "f" else 0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return dict(zip(names, session.run(names, feeds), strict=True))


def _initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    name = base
    counter = 0
    while name in graph.initializers:
        counter += 1
        name = f"{base}{counter}"
    tensor = ir.Tensor(array, name=name)
    value = ir.Value(
        name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
    )
    graph.register_initializer(value)
    return value
