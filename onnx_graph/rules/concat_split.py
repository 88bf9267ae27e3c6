"""Concat, Split and Slice: channel ranges placed at offsets along one axis."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.index_map import ExplicitMap, Offset
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import (
    attr_int,
    constant_ints,
    input_or_none,
    normalize_axis,
    rank,
    required_input,
)
from onnx_graph.surgery_context import SurgeryContext


def _offset_pieces(
    node: ir.Node, pieces: list[ir.Value], whole: ir.Value, axis: int, ctx: AnalysisContext
) -> None:
    """Couple each piece to its range of ``whole`` along ``axis`` (pieces laid out in order)."""
    sizes = [(static_shape(piece) or (None,) * (axis + 1))[axis] for piece in pieces]
    if None in sizes:
        # Offsets are unknown: every piece and the whole (the live axis among them) freeze.
        unknown = pieces[sizes.index(None)].name
        for value in (*pieces, whole):
            ctx.freeze_node(node, value, axis, f"piece '{unknown}' has unknown size")
        return
    offset = 0
    for piece, size in zip(pieces, sizes, strict=True):
        assert size is not None
        ctx.couple(piece, axis, whole, axis, Offset(size, offset))
        offset += size


@register_rule("Concat")
class ConcatRule(OpRule):
    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        output = node.outputs[0]
        concat_axis = normalize_axis(attr_int(node, "axis", 0), rank(output) or 0)
        inputs = [v for v in node.inputs if v is not None]
        if axis != concat_axis:
            for value in (*inputs, output):
                ctx.couple(port, axis, value, axis)
            return
        _offset_pieces(node, inputs, output, axis, ctx)


@register_rule("Split")
class SplitRule(OpRule):
    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data = required_input(node, 0)
        split_axis = normalize_axis(attr_int(node, "axis", 0), rank(data) or 0)
        if port is input_or_none(node, 1):
            return
        if axis != split_axis:
            for value in (data, *node.outputs):
                ctx.couple(port, axis, value, axis)
            return
        _offset_pieces(node, list(node.outputs), data, axis, ctx)

    def rewrite(self, node: ir.Node, ctx: SurgeryContext) -> None:
        data = required_input(node, 0)
        split_axis = normalize_axis(attr_int(node, "axis", 0), rank(data) or 0)
        if ctx.kept_positions(data, split_axis) is None:
            return
        sizes = np.array([ctx.new_size(out, split_axis) for out in node.outputs], dtype=np.int64)
        ctx.replace_constant_input(node, 1, sizes)
        node.attributes.pop("num_outputs", None)


@register_rule("Slice")
class SliceRule(OpRule):
    """A Slice on a channel axis keeps a contiguous range; channels outside it are simply dropped."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, output = required_input(node, 0), node.outputs[0]
        if port is not data and port is not output:
            return
        ranges = _slice_ranges(node)
        if ranges is None:
            ctx.freeze_node(node, port, axis, "non-constant slice bounds")
            return
        if axis not in ranges:
            ctx.couple(data, axis, output, axis)
            return
        start, stop, step = ranges[axis]
        if step != 1:
            ctx.freeze_node(node, port, axis, f"slice with step {step}")
            return
        shape = static_shape(data)
        size = shape[axis] if shape else None
        if size is None:
            ctx.freeze_node(node, port, axis, "unknown size")
            return
        positions = np.arange(size)[start:stop:step]
        ctx.couple(output, axis, data, axis, ExplicitMap(np.arange(len(positions)), positions))

    def rewrite(self, node: ir.Node, ctx: SurgeryContext) -> None:
        data = required_input(node, 0)
        ranges = _slice_ranges(node)
        assert ranges is not None
        axes_value = input_or_none(node, 3)
        axes = constant_ints(axes_value) or list(
            range(len(constant_ints(required_input(node, 1)) or []))
        )
        starts = np.array(constant_ints(required_input(node, 1)), dtype=np.int64)
        ends = np.array(constant_ints(required_input(node, 2)), dtype=np.int64)
        changed = False
        for index, raw_axis in enumerate(axes):
            axis = normalize_axis(raw_axis, rank(data) or 0)
            kept = ctx.kept_positions(data, axis)
            if kept is None:
                continue
            start, _, _ = ranges[axis]
            new_start = int(np.searchsorted(kept, start))
            starts[index] = new_start
            ends[index] = new_start + ctx.new_size(node.outputs[0], axis)
            changed = True
        if changed:
            ctx.replace_constant_input(node, 1, starts)
            ctx.replace_constant_input(node, 2, ends)


def _slice_ranges(node: ir.Node) -> dict[int, tuple[int, int, int]] | None:
    """Normalised (start, stop, step) per sliced axis, from constant inputs (None if dynamic)."""
    data = required_input(node, 0)
    shape = static_shape(data)
    starts, ends = constant_ints(input_or_none(node, 1)), constant_ints(input_or_none(node, 2))
    if shape is None or starts is None or ends is None:
        return None
    axes_value, steps_value = input_or_none(node, 3), input_or_none(node, 4)
    axes = constant_ints(axes_value) if axes_value is not None else list(range(len(starts)))
    steps = constant_ints(steps_value) if steps_value is not None else [1] * len(starts)
    if axes is None or steps is None:
        return None
    ranges: dict[int, tuple[int, int, int]] = {}
    for start, stop, raw_axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = normalize_axis(raw_axis, len(shape))
        size = shape[axis]
        if size is None:
            continue
        ranges[axis] = slice(start, stop, step).indices(size)
    return ranges
