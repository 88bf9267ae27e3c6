"""Transpose, pooling, reductions, Softmax, Pad, Resize, Gather and Shape."""

from __future__ import annotations

import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import (
    attr_int,
    attr_ints,
    constant_ints,
    input_or_none,
    normalize_axis,
    rank,
    required_input,
)


@register_rule("Transpose")
class TransposeRule(OpRule):
    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, output = required_input(node, 0), node.outputs[0]
        perm = attr_ints(node, "perm") or list(reversed(range(rank(data) or 0)))
        if port is output:
            ctx.couple(output, axis, data, perm[axis])
        else:
            ctx.couple(data, axis, output, perm.index(axis))


@register_rule(
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
)
class PoolRule(OpRule):
    """Pooling works per channel: batch and channel axes pass through, spatial axes do not."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        if axis > 1:
            ctx.freeze_node(node, port, axis, "pooling changes spatial axes")
            return
        for value in (required_input(node, 0), *node.outputs):
            ctx.couple(port, axis, value, axis)


REDUCE_OPS = (
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "ArgMax",
    "ArgMin",
)


@register_rule(*REDUCE_OPS)
class ReduceRule(OpRule):
    """Reducing over spatial axes keeps channels; reducing over a channel axis mixes them."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, output = required_input(node, 0), node.outputs[0]
        if port is not data and port is not output:
            return
        data_rank = rank(data)
        if data_rank is None:
            ctx.freeze_node(node, port, axis, "unknown rank")
            return
        if node.op_type in ("ArgMax", "ArgMin"):
            reduced = [normalize_axis(attr_int(node, "axis", 0), data_rank)]
        else:
            axes = attr_ints(node, "axes")
            axes_input = input_or_none(node, 1)
            if axes is None and axes_input is not None:
                axes = constant_ints(axes_input)
                if axes is None:
                    ctx.freeze_node(node, port, axis, "reduction axes computed at run time")
                    return
            if not axes:
                axes = [] if attr_int(node, "noop_with_empty_axes", 0) else list(range(data_rank))
            reduced = sorted(normalize_axis(a, data_rank) for a in axes)
        keepdims = attr_int(node, "keepdims", 1)
        kept_axes = (
            list(range(data_rank))
            if keepdims
            else [a for a in range(data_rank) if a not in reduced]
        )
        data_axis = axis if port is data else kept_axes[axis]
        if data_axis in reduced:
            ctx.freeze_node(node, port, axis, f"{node.op_type} reduces over channels")
            return
        ctx.couple(data, data_axis, output, kept_axes.index(data_axis))


@register_rule("Softmax", "LogSoftmax", "Hardmax")
class SoftmaxRule(OpRule):
    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        value_rank = rank(port) or 0
        if axis == normalize_axis(attr_int(node, "axis", -1), value_rank):
            ctx.freeze_node(node, port, axis, f"{node.op_type} normalises over channels")
            return
        ctx.couple(port, axis, required_input(node, 0), axis)
        ctx.couple(port, axis, node.outputs[0], axis)


@register_rule("Pad")
class PadRule(OpRule):
    """Only axes with zero padding carry channels through."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, output = required_input(node, 0), node.outputs[0]
        if port is not data and port is not output:
            return
        data_rank = rank(data) or 0
        pads = attr_ints(node, "pads") or constant_ints(input_or_none(node, 1))
        axes = constant_ints(input_or_none(node, 3)) or list(range(data_rank))
        if pads is None:
            ctx.freeze_node(node, port, axis, "padding computed at run time")
            return
        axes = [normalize_axis(a, data_rank) for a in axes]
        if axis in axes:
            position = axes.index(axis)
            if pads[position] != 0 or pads[position + len(axes)] != 0:
                ctx.freeze_node(node, port, axis, "pads the channel axis")
                return
        ctx.couple(data, axis, output, axis)


@register_rule("Resize", "Upsample")
class ResizeRule(OpRule):
    """Resizing only spatial axes: an axis whose size is unchanged passes channels through."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, output = required_input(node, 0), node.outputs[0]
        if port is not data and port is not output:
            return
        in_shape, out_shape = static_shape(data), static_shape(output)
        if not in_shape or not out_shape or in_shape[axis] != out_shape[axis]:
            ctx.freeze_node(node, port, axis, "resizes this axis")
            return
        ctx.couple(data, axis, output, axis)


@register_rule("Gather")
class GatherRule(OpRule):
    """Gathering along another axis keeps channels; gathering along the channel axis freezes."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, indices, output = required_input(node, 0), required_input(node, 1), node.outputs[0]
        data_rank, indices_rank = rank(data), rank(indices)
        if port is indices or data_rank is None or indices_rank is None:
            ctx.freeze_node(node, port, axis, "gather indices")
            return
        gather_axis = normalize_axis(attr_int(node, "axis", 0), data_rank)
        data_axis = (
            axis if port is data else (axis if axis < gather_axis else axis - indices_rank + 1)
        )
        if data_axis == gather_axis or (
            port is output and gather_axis <= axis < gather_axis + indices_rank
        ):
            ctx.freeze_node(node, port, axis, "gathers along the channel axis")
            return
        output_axis = data_axis if data_axis < gather_axis else data_axis + indices_rank - 1
        ctx.couple(data, data_axis, output, output_axis)


@register_rule("Shape")
class ShapeOfRule(OpRule):
    """Reads only the shape. Safe when every use picks entries other than the channel axis (the
    batch entry of a dynamic-batch Reshape target); any other use would see the pruned size."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        start = normalize_axis(attr_int(node, "start", 0), rank(port) or 0)
        entry = axis - start
        for consumer in node.outputs[0].consumers():
            picked = _picked_entries(consumer)
            if picked is None or entry in picked:
                ctx.freeze_node(
                    node,
                    port,
                    axis,
                    f"its size is read by {consumer.op_type} node '{consumer.name}'",
                )
                return


def _picked_entries(node: ir.Node) -> set[int] | None:
    """Entries of a shape vector a Gather or Slice with constant indices reads (None: unknown)."""
    if node.op_type == "Gather":
        indices = constant_ints(required_input(node, 1))
        return None if indices is None else set(indices)
    if node.op_type == "Slice":
        starts, ends = constant_ints(input_or_none(node, 1)), constant_ints(input_or_none(node, 2))
        if starts is None or ends is None or len(starts) != 1:
            return None
        shape = static_shape(required_input(node, 0))
        length = shape[0] if shape and shape[0] is not None else None
        if length is None:
            return None
        return set(range(length)[slice(starts[0], ends[0])])
    return None


@register_rule("Size")
class SizeRule(OpRule):
    """The element count depends on every axis: a channel axis that reaches it freezes."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        ctx.freeze_node(node, port, axis, "reads the element count")
