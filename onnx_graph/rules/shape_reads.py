"""Shape: a channel count read at run time must not feed arithmetic that outlives pruning.

Reading a shape is harmless when the result only selects the batch (``Expand`` of a class token)
or has been turned into a constant (``onnx_graph.shape_targets``). But the legacy exporter computes
the attention scale as ``sqrt(Shape(x)[2] / heads)`` from the embedding width: pruning that axis
would change the scale silently. The rule follows which shape elements reach which consumers
(through Slice, Gather, Concat, Squeeze, Unsqueeze, Cast) and freezes a live axis whose size does.
"""

from __future__ import annotations

import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import attr_int, constant_ints, rank

_MOVES_ELEMENTS = ("Slice", "Gather", "Concat", "Squeeze", "Unsqueeze", "Cast", "Identity")


@register_rule("Shape")
class ShapeReadRule(OpRule):
    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        if port is not node.inputs[0]:
            return
        data_rank = rank(port) or 0
        start = _clamp(attr_int(node, "start", 0), data_rank)
        end = _clamp(attr_int(node, "end", data_rank), data_rank)
        if not start <= axis < end:
            return
        reader = _reader_of(node.outputs[0], axis - start, depth=8)
        if reader is not None:
            ctx.freeze_node(node, port, axis, f"size read at run time by {reader.op_type} '{reader.name}'")


def _clamp(index: int, size: int) -> int:
    return max(0, min(size, index + size if index < 0 else index))


def _reader_of(value: ir.Value, element: int, depth: int) -> ir.Node | None:
    """The first node that computes with ``value[element]`` (None when nothing does)."""
    for consumer in value.consumers():
        if depth == 0 or consumer.op_type not in _MOVES_ELEMENTS or consumer.inputs[0] is not value:
            if consumer.op_type != "Concat":
                return consumer
        position = _moved_position(consumer, value, element)
        if position is None:
            continue  # this consumer drops the element
        found = _reader_of(consumer.outputs[0], position, depth - 1)
        if found is not None:
            return found
    return None


def _moved_position(node: ir.Node, value: ir.Value, element: int) -> int | None:
    """Where ``value[element]`` lands in the output of an element-moving node (None: dropped)."""
    length = value.shape[0] if value.shape is not None and len(value.shape) == 1 else None
    op = node.op_type
    if op in ("Squeeze", "Unsqueeze", "Cast", "Identity"):
        return element
    if op == "Concat":
        offset = 0
        for piece in node.inputs:
            if piece is value:
                return offset + element
            piece_length = piece.shape[0] if piece is not None and piece.shape is not None else None
            if not isinstance(piece_length, int):
                return element  # unknown layout: assume it is still read
            offset += piece_length
        return None
    if not isinstance(length, int):
        return element
    if op == "Gather":
        indices = constant_ints(node.inputs[1])
        if indices is None:
            return element
        normalised = [i + length if i < 0 else i for i in indices]
        return normalised.index(element) if element in normalised else None
    starts, ends = constant_ints(node.inputs[1]), constant_ints(node.inputs[2])
    if not starts or not ends:
        return element
    kept = list(range(length))[slice(starts[0], ends[0])]
    return kept.index(element) if element in kept else None
