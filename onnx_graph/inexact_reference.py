"""A dense reference for inexact groups: the zeroed model with LayerNorms over kept channels only.

Pruning a LayerNorm-normalised axis changes the mean and variance (they run over fewer channels),
so ``zero_out`` is no reference for such groups. This model is: every LayerNormalization whose
channel axis loses channels gathers the kept channels, normalises them with the kept scale and bias,
and scatters the result back with a 0/1 matrix (removed channels read 0, as their zeroed scale and
bias give). Its outputs must equal the pruned model's exactly; tests and benchmarks use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnx_graph.plan import PruningPlan
from onnx_graph.surgery import prune, zero_out


def masked_norm_reference(model: ir.Model, plan: PruningPlan) -> ir.Model:
    """``zero_out(model, plan)`` with each affected LayerNorm computed over kept channels only."""
    kept = plan.groups.kept_positions(plan.removed_mask())
    reference = zero_out(model, plan)
    graph = reference.graph
    # Read every input name first: a replaced norm's output feeds the next norm under a new name.
    norms = [(node, node.inputs[0]) for node in graph if node.op_type == "LayerNormalization"]
    targets = []
    for node, x in norms:
        if x is None or x.shape is None or x.name is None:
            continue
        x_rank = len(x.shape)
        positions = kept.get((x.name, x_rank - 1))
        attribute = node.attributes.get("axis")
        norm_axis = int(attribute.value) if attribute is not None else -1
        size = x.shape[x_rank - 1]
        if positions is not None and norm_axis in (-1, x_rank - 1) and isinstance(size, int):
            targets.append((node, positions, size))
    for node, positions, size in targets:
        _replace_with_masked(graph, node, positions, size)
    return reference


def _replace_with_masked(graph: ir.Graph, node: ir.Node, positions: np.ndarray, size: int) -> None:
    name = node.name or "layer_norm"
    indices = _constant(graph, f"{name}__kept", positions.astype(np.int64))
    scatter = np.zeros((len(positions), size), dtype=np.float32)
    scatter[np.arange(len(positions)), positions] = 1.0
    scatter_value = _constant(graph, f"{name}__scatter", scatter)
    gathered = ir.node("Gather", [node.inputs[0], indices], attributes={"axis": -1})
    inputs = [gathered.outputs[0]]
    for index, parameter in enumerate(node.inputs[1:3], start=1):
        if parameter is None or parameter.const_value is None:
            continue
        sliced = np.ascontiguousarray(parameter.const_value.numpy()[positions])
        inputs.append(_constant(graph, f"{name}__param{index}", sliced))
    normed = ir.node(
        "LayerNormalization", inputs, attributes={k: v for k, v in node.attributes.items()}
    )
    scattered = ir.node("MatMul", [normed.outputs[0], scatter_value])
    graph.insert_before(node, [gathered, normed, scattered])
    old_output = node.outputs[0]
    ir.convenience.replace_all_uses_with(old_output, scattered.outputs[0])
    for index, graph_output in enumerate(graph.outputs):
        if graph_output is old_output:
            graph.outputs[index] = scattered.outputs[0]
    graph.remove(node, safe=True)


def _constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    tensor = ir.Tensor(array, name=name)
    value = ir.Value(
        name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
    )
    graph.register_initializer(value)
    return value


def masked_norm_difference(
    model: ir.Model, plan: PruningPlan, inputs: Mapping[str, np.ndarray] | np.ndarray
) -> tuple[float, float]:
    """(max |pruned - masked reference|, max |reference|): the oracle for inexact groups."""
    pruned = _run(prune(model, plan), inputs)
    reference = _run(masked_norm_reference(model, plan), inputs)
    difference = max(float(np.abs(p - r).max()) for p, r in zip(pruned, reference, strict=True))
    return difference, max(float(np.abs(r).max()) for r in reference)


def _run(model: ir.Model, inputs: Mapping[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """onnxruntime outputs; models over the 2 GB protobuf limit run from a temporary file."""
    from onnx_graph.testing import run_onnx

    size = sum(
        v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None
    )
    if size < _PROTO_LIMIT:
        return run_onnx(model, inputs)
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/model.onnx"
        ir.save(model, path, external_data="model.onnx.data")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = (
            {session.get_inputs()[0].name: inputs}
            if isinstance(inputs, np.ndarray)
            else dict(inputs)
        )
        return session.run(None, feed)


_PROTO_LIMIT = 1_800_000_000
