"""Concrete shapes for the analysis of dynamic-batch graphs: every symbolic dimension resolved.

Dynamic-batch exports fold the head count into symbolic dimensions (``[T, 4*batch, D]``) or lose
shapes behind ``Shape -> Slice -> Concat -> Reshape`` chains, where channel axes cannot be related.
The analysis therefore runs on a clone whose graph inputs have batch 1 and whose shapes come from
strict ONNX shape inference with data propagation. Batch axes then have size 1 (they never carry
channels) and a merged ``batch * heads`` axis has exactly ``heads`` positions. The groups refer to
values by name, so they apply unchanged to the dynamic model; surgery leaves symbolic dims alone.
"""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir

logger = logging.getLogger(__name__)


def has_symbolic_dims(model: ir.Model) -> bool:
    """Whether any graph input has a symbolic batch (leading) dimension."""
    return any(
        value.shape is not None and len(value.shape) > 0 and not isinstance(value.shape[0], int)
        for value in model.graph.inputs
    )


def with_concrete_shapes(model: ir.Model, batch: int = 1) -> ir.Model | None:
    """A clone of ``model`` with symbolic batch dims set to ``batch`` and every shape inferred.

    Only the leading dimension of each input is fixed: another symbolic dimension (a channel count
    computed at run time) stays unknown, and the axes it reaches stay frozen.

    Returns None when inference fails (the caller analyses the symbolic shapes instead).
    """
    shapes = inferred_shapes(model, batch)
    if shapes is None:
        return None
    clone = model.clone()
    for value in _all_values(clone.graph):
        dims = shapes.get(value.name or "")
        if dims is not None and value.const_value is None:
            value.shape = ir.Shape(dims)
    return clone


# Initializers with more elements than this reach shape inference as typed graph inputs, without
# their data: inference needs only their shapes, while small integer constants (Reshape targets,
# Slice bounds, Split sizes) must stay values for data propagation.
_SKELETON_MAX_ELEMENTS = 64


def _skeleton_proto(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto for shape inference: large initializers as inputs, no weight data.

    Serialising the weights would cost more than the inference itself (hundreds of MB for a
    ResNet-50 or ViT), and inference would parse them all again.
    """
    large = {
        name: value
        for name, value in model.graph.initializers.items()
        if value.const_value is not None and value.const_value.size > _SKELETON_MAX_ELEMENTS
    }
    detached = {name: value.const_value for name, value in large.items()}
    serde_logger = logging.getLogger("onnx_ir.serde")
    previous_level = serde_logger.level
    serde_logger.setLevel(logging.ERROR)  # "initializer has no constant value" is intended here
    try:
        for value in large.values():
            value.const_value = None
        proto = ir.to_proto(model)
    finally:
        serde_logger.setLevel(previous_level)
        for name, value in large.items():
            value.const_value = detached[name]
    weight_infos = [info for info in proto.graph.value_info if info.name in large]
    del proto.graph.value_info[:]
    proto.graph.input.extend(weight_infos)
    return proto


def inferred_shapes(model: ir.Model, batch: int) -> dict[str, list[int | None]] | None:
    """Every value's shape from strict shape inference with the leading input dims set to ``batch``.

    Existing value shapes are ignored (they may be symbolic or stale). Returns None when inference
    fails.
    """
    proto = _skeleton_proto(model)
    for graph_input in proto.graph.input:
        tensor_type = graph_input.type.tensor_type
        for dim in tensor_type.shape.dim[:1]:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch
    for graph_output in proto.graph.output:
        graph_output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as error:  # onnx raises several unrelated types
        logger.info("concrete shape inference failed, analysing symbolic shapes: %s", error)
        return None
    shapes: dict[str, list[int | None]] = {}
    for info in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
            ]
    return shapes


def _all_values(graph: ir.Graph) -> list[ir.Value]:
    values = list(graph.inputs)
    for node in graph:
        values.extend(v for v in node.outputs if v is not None)
    return values
