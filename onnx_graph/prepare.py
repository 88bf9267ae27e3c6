"""Normalise an onnx-ir model before analysis: names, constants as initializers, shapes."""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnx_graph.fold_strided import fold_identity_gathers

logger = logging.getLogger(__name__)

PREPARED_KEY = "sparsearch.prepared"


def prepare(model: ir.Model) -> ir.Model:
    """Make ``model`` ready for analysis (in place; idempotent).

    - every node and value gets a unique name (the plan and reports refer to names);
    - Constant nodes become initializers, so weights and shape constants are sliced one way;
    - initializers listed as graph inputs (old IR) are dropped from the inputs;
    - Identity nodes are removed (the legacy exporter aliases deduplicated weights through them);
    - a *uniform* initializer (all elements equal, such as the zero bias the legacy exporter
      shares between convs) used by several nodes gets one copy per use: sharing it is an
      accident of deduplication, and it must not couple unrelated layers;
    - identity ``as_strided`` gathers of the dynamo exporter are folded away;
    - missing value shapes are inferred.
    """
    if model.meta.get(PREPARED_KEY):
        return model
    needed = _needed_passes(model.graph)
    if "names" in needed:
        common_passes.NameFixPass()(model)
    if "inputs" in needed:
        common_passes.RemoveInitializersFromInputsPass()(model)
    if "Constant" in needed:
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    if "Identity" in needed:  # exporters alias shared weights via Identity
        common_passes.IdentityEliminationPass()(model)
    _unshare_uniform_initializers(model.graph)
    for _ in range(3):  # inference stops at ops it cannot infer; fill those and go again
        if not _missing_shapes(model.graph):
            break
        common_passes.ShapeInferencePass(strict_mode=False)(model)
        if not _fill_shape_preserving_outputs(model.graph):
            break
    fold_identity_gathers(model.graph)
    model.meta[PREPARED_KEY] = True
    return model


def _needed_passes(graph: ir.Graph) -> set[str]:
    """Which normalising passes have work to do, from one scan of the graph.

    Each onnx-ir pass walks every node and subgraph; on an already tidy export (unique names, no
    Constant or Identity node) the four of them cost a ViT-B 7 ms for nothing. A graph with
    subgraphs (If, Loop, Scan) gets every pass.
    """
    needed: set[str] = set()
    node_names: set[str] = set()
    value_names: set[str] = set()

    def name_once(name: str | None, seen: set[str]) -> None:
        if not name or name in seen:
            needed.add("names")
        else:
            seen.add(name)

    for value in graph.inputs:
        name_once(value.name, value_names)
        if value.name in graph.initializers:
            needed.add("inputs")
    value_names.update(graph.initializers)
    for node in graph:
        name_once(node.name, node_names)
        if node.domain in ("", "ai.onnx") and node.op_type in ("Constant", "Identity"):
            needed.add(node.op_type)
        for attribute in node.attributes.values():
            if attribute.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
                return {"names", "inputs", "Constant", "Identity"}
        for value in node.outputs:
            name_once(value.name, value_names)
    return needed


def _unshare_uniform_initializers(graph: ir.Graph) -> None:
    for name, value in list(graph.initializers.items()):
        uses = list(value.uses())
        if len(uses) < 2 or value.const_value is None or value.dtype is None:
            continue
        if not value.dtype.is_floating_point():
            continue
        array = value.const_value.numpy()
        if array.size < 2 or not np.all(array == array.reshape(-1)[0]):
            continue
        for copy_index, (node, input_index) in enumerate(uses[1:], start=1):
            copy_name = f"{name}__copy{copy_index}"
            tensor = ir.Tensor(array.copy(), name=copy_name)
            copy = ir.Value(name=copy_name, shape=value.shape, type=value.type, const_value=tensor)
            graph.register_initializer(copy)
            node.replace_input_with(input_index, copy)


# Ops whose first output has the shape and type of their first input. ONNX shape inference does
# not see through some of them (GroupNormalization-21 is a function op).
_SHAPE_PRESERVING = {
    "GroupNormalization",
    "LayerNormalization",
    "InstanceNormalization",
    "BatchNormalization",
    "MeanVarianceNormalization",
    "LpNormalization",
    "LRN",
    "Gelu",
    "Mish",
    "Swish",
    "HardSwish",
}


def _fill_shape_preserving_outputs(graph: ir.Graph) -> bool:
    filled = False
    for node in graph:
        if node.op_type not in _SHAPE_PRESERVING or not node.inputs or node.inputs[0] is None:
            continue
        source, target = node.inputs[0], node.outputs[0]
        if target.shape is None and source.shape is not None:
            target.shape = source.shape
            target.type = source.type
            filled = True
    return filled


def _missing_shapes(graph: ir.Graph) -> bool:
    return any(out.shape is None for node in graph for out in node.outputs)
