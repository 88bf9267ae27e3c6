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

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

logger = logging.getLogger(__name__)


def constant_reshape_targets(model: ir.Model) -> int:
    """Replace computed Reshape targets by constants where at most one entry follows the batch.

    Returns how many targets were replaced. Models whose inputs have no symbolic dimension, or
    that onnxruntime cannot run, are left unchanged.
    """
    reshapes = [
        n
        for n in model.graph
        if n.op_type == "Reshape"
        and len(n.inputs) > 1
        and n.inputs[1] is not None
        and n.inputs[1].const_value is None
        and n.inputs[1].name
    ]
    if not reshapes:
        return 0
    resolved = {batch: _inferred_outputs(model, reshapes, batch) for batch in (1, 2)}
    unresolved = sorted(
        {_target_name(n) for n in reshapes if any(n not in r for r in resolved.values())}
    )
    evaluated: dict[int, dict[str, np.ndarray]] = {1: {}, 2: {}}
    if unresolved:
        try:
            evaluated = {batch: _evaluate(model, unresolved, batch) for batch in (1, 2)}
        except Exception as error:  # onnxruntime raises its own error types
            logger.info("could not evaluate reshape targets (%s); they stay computed", error)
    replaced = 0
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
        node.replace_input_with(1, _initializer(model.graph, f"{name}__constant", constant))
        replaced += 1
    if replaced:
        common_passes.RemoveUnusedNodesPass()(model)
        logger.info("replaced %d computed reshape targets by constants", replaced)
    return replaced


def _target_name(node: ir.Node) -> str:
    target = node.inputs[1]
    assert target is not None and target.name is not None
    return target.name


def _inferred_outputs(model: ir.Model, reshapes: list[ir.Node], batch: int) -> dict[ir.Node, np.ndarray]:
    """Output shapes of ``reshapes`` at ``batch`` that shape inference resolves completely."""
    from onnx_graph.static_shapes import inferred_shapes

    shapes = inferred_shapes(model, batch)
    if shapes is None:
        return {}
    resolved = {}
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
