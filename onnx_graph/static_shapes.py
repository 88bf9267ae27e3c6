"""Concrete shapes for the analysis of dynamic-batch graphs: every symbolic dimension resolved.

Dynamic-batch exports fold the head count into symbolic dimensions (``[T, 4*batch, D]``) or lose
shapes behind ``Shape -> Slice -> Concat -> Reshape`` chains, where channel axes cannot be related.
The analysis therefore sees shapes at batch 1: read off the graph where it can
(``onnx_graph.local_shapes``), else inferred here on the whole model, with data propagation when
plain inference leaves dims unknown. Batch axes then have size 1 (they never carry channels) and a
merged ``batch * heads`` axis has exactly ``heads`` positions. The groups refer to values by name,
so they apply unchanged to the dynamic model; surgery leaves symbolic dims alone.

Inference runs on a weight-free skeleton of the model (large initializers become typed inputs):
serialising hundreds of MB of weights would cost far more than the inference itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import onnx
import onnx_ir as ir

logger = logging.getLogger(__name__)

Shapes = dict[str, list[int | None]]

# Floating-point initializers with more elements than this reach shape inference as typed graph
# inputs, without their data: inference needs only their shapes. Integer constants (Reshape
# targets, Slice bounds, Split sizes, Gather indices) stay values for data propagation.
_SKELETON_MAX_ELEMENTS = 64


def batch_symbols(model: ir.Model) -> set[str]:
    """Names of the symbolic leading (batch) dimensions of the graph inputs."""
    return {
        str(value.shape[0])
        for value in model.graph.inputs
        if value.shape is not None and len(value.shape) > 0 and not isinstance(value.shape[0], int)
    }


def has_symbolic_dims(model: ir.Model) -> bool:
    """Whether any graph input has a symbolic batch (leading) dimension."""
    return bool(batch_symbols(model))


class SkeletonInference:
    """Shape inference on one weight-free skeleton of a model, at any batch.

    Data propagation (needed where shapes are computed at run time, e.g. Expand to the batch) costs
    about three times plain inference, so callers try without it first.
    """

    def __init__(self, model: ir.Model) -> None:
        self._skeleton = _skeleton_proto(model)

    def at(self, batch: int, data_propagation: bool = True) -> Shapes | None:
        """Every value's shape with the inputs' leading dims at ``batch`` (None on failure)."""
        return _infer_at_batch(self._skeleton, batch, data_propagation)


def inferred_shapes(model: ir.Model, batches: Iterable[int]) -> dict[int, Shapes | None]:
    """Every value's shape inferred with the leading input dims set to each of ``batches``.

    Only the leading dimension of each input is fixed: another symbolic dimension (a channel count
    computed at run time) stays unknown. Existing value shapes are ignored (they may be symbolic
    or stale). A batch whose inference fails maps to None.
    """
    inference = SkeletonInference(model)
    return {batch: inference.at(batch) for batch in batches}


def completed_shapes(model: ir.Model, inferred: Shapes, batch: int = 1) -> Shapes | None:
    """Every value's shape at ``batch``: the inferred one, or else the graph's own with the batch.

    A graph shape serves when each of its symbolic dims is the leading dim of a graph input (a
    CNN exported with a dynamic batch has only ``batch``). With ``inferred`` empty this reads
    every shape off the graph without inference. Returns None when some value has neither
    (merged ``heads*batch`` dims, unknown dims).
    """
    symbols = batch_symbols(model)
    shapes: Shapes = {}
    for value in _all_values(model.graph):
        found = inferred.get(value.name or "")
        if found is None or None in found:
            found = _with_batch(value.shape, symbols, batch)
            if found is None:
                return None
        shapes[value.name or ""] = found
    return shapes


def _with_batch(shape: ir.Shape | None, symbols: set[str], batch: int) -> list[int | None] | None:
    if shape is None:
        return None
    dims: list[int | None] = []
    for dim in shape:
        if isinstance(dim, int):
            dims.append(dim)
        elif dim.value is not None and str(dim) in symbols:
            dims.append(batch)
        else:
            return None
    return dims


@contextmanager
def concrete_shapes(model: ir.Model, shapes: Shapes) -> Iterator[ir.Model]:
    """Give ``model``'s non-constant values the ``shapes`` for the duration of the block.

    The analysis reads value shapes; setting them in place and restoring them afterwards costs
    far less than cloning a large graph.
    """
    saved: list[tuple[ir.Value, ir.Shape | None]] = []
    try:
        for value in _all_values(model.graph):
            dims = shapes.get(value.name or "")
            if dims is None or value.const_value is not None:
                continue
            if value.shape is None or not all_int_dims(value.shape.dims):
                saved.append((value, value.shape))
                value.shape = ir.Shape(dims)
        yield model
    finally:
        for value, shape in saved:
            value.shape = shape


def _infer_at_batch(skeleton: onnx.ModelProto, batch: int, data_propagation: bool) -> Shapes | None:
    proto = onnx.ModelProto()
    proto.CopyFrom(skeleton)
    for graph_input in proto.graph.input:
        tensor_type = graph_input.type.tensor_type
        for dim in tensor_type.shape.dim[:1]:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch
    try:
        # Not strict: an op inference cannot handle leaves its outputs unknown (their axes freeze)
        # instead of failing the whole model; strict mode also costs a third more time.
        inferred = onnx.shape_inference.infer_shapes(
            proto, strict_mode=False, data_prop=data_propagation
        )
    except Exception as error:  # onnx raises several unrelated types
        logger.info("shape inference at batch %d failed: %s", batch, error)
        return None
    shapes: Shapes = {}
    for info in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
            ]
    return shapes


def _skeleton_proto(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto for shape inference: large initializers as inputs, no weight data."""
    large = {
        name: value
        for name, value in model.graph.initializers.items()
        if value.const_value is not None
        and value.const_value.size > _SKELETON_MAX_ELEMENTS
        and value.const_value.dtype.is_floating_point()
    }
    detached = {name: value.const_value for name, value in large.items()}
    # Inference recomputes every intermediate shape: serialising the old ones would only cost time.
    intermediates = [
        value
        for node in model.graph
        for value in node.outputs
        if not value.is_graph_output() and (value.shape is not None or value.type is not None)
    ]
    typed = [(value, value.type, value.shape) for value in intermediates]
    # Exporters attach stack traces and scopes to every node: inference needs none of it.
    metadata = [(node, dict(node.metadata_props)) for node in model.graph if node.metadata_props]
    serde_logger = logging.getLogger("onnx_ir.serde")
    previous_level = serde_logger.level
    serde_logger.setLevel(logging.ERROR)  # "initializer has no constant value" is intended here
    try:
        for value in large.values():
            value.const_value = None
        for value in intermediates:
            value.type, value.shape = None, None
        for node, _ in metadata:
            node.metadata_props.clear()
        proto = ir.to_proto(model)
    finally:
        serde_logger.setLevel(previous_level)
        for name, value in large.items():
            value.const_value = detached[name]
        for value, value_type, shape in typed:
            value.type, value.shape = value_type, shape
        for node, props in metadata:
            node.metadata_props.update(props)
    weight_infos = [info for info in proto.graph.value_info if info.name in large]
    del proto.graph.value_info[:]
    proto.graph.input.extend(weight_infos)
    for graph_output in proto.graph.output:
        graph_output.type.tensor_type.ClearField("shape")
    return proto


def all_int_dims(dims: tuple[int | ir.SymbolicDim, ...]) -> bool:
    """Whether every dim is a plain int (no symbolic or unknown dim)."""
    for dim in dims:  # a plain loop: all() over a generator costs twice as much
        if type(dim) is not int:
            return False
    return True


def _all_values(graph: ir.Graph) -> list[ir.Value]:
    values = list(graph.inputs)
    for node in graph:
        values.extend(v for v in node.outputs if v is not None)
    return values
