"""Conv and ConvTranspose: plain, grouped, depthwise and depth-multiplier convolutions.

Grouped convs keep their group count: a channel unit is one channel *in every group* (so each group
keeps equal widths). Depthwise convs (one input channel per group) couple each input channel with
its ``multiplier`` output channels, and the group count follows the remaining channels.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.index_map import ExplicitMap, Stride
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import attr_int, input_or_none, required_input
from onnx_graph.surgery_context import SurgeryContext


def _within_group(size: int, groups: int) -> ExplicitMap:
    """Channel c is unit c % (size / groups): the same slot in every group moves together."""
    index = np.arange(size, dtype=np.int64)
    return ExplicitMap(index, index % (size // groups))


def _channel_side(
    node: ir.Node, port: ir.Value, axis: int, *, weight_in_axis: int, weight_out_axis: int
) -> str | None:
    """Whether the live axis is the conv's output channels, its input channels, or neither."""
    y, weight, bias = node.outputs[0], node.inputs[1], input_or_none(node, 2)
    if (port is y and axis == 1) or (port is weight and axis == weight_out_axis):
        return "output"
    if port is bias and axis == 0:
        return "output"
    if (port is node.inputs[0] and axis == 1) or (port is weight and axis == weight_in_axis):
        return "input"
    return None


@register_rule("Conv")
class ConvRule(OpRule):
    def seed(self, node: ir.Node, ctx: AnalysisContext) -> None:
        ctx.activate(node.outputs[0], 1)

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        x, weight, bias = required_input(node, 0), required_input(node, 1), input_or_none(node, 2)
        y = node.outputs[0]
        groups = attr_int(node, "group", 1)
        weight_shape, x_shape = static_shape(weight), static_shape(x)
        if weight_shape is None or x_shape is None or x_shape[1] is None:
            ctx.freeze_node(node, port, axis, "unknown weight or input shape")
            return
        out_channels, in_per_group = weight_shape[0], weight_shape[1]
        assert out_channels is not None and in_per_group is not None
        side = _channel_side(node, port, axis, weight_in_axis=1, weight_out_axis=0)
        if side is None:
            ctx.freeze_node(node, port, axis, f"axis {axis} of '{port.name}' is not a channel axis")
            return
        on_input = side == "input"
        ctx.couple(y, 1, weight, 0)
        ctx.couple(y, 1, bias, 0)
        if groups > 1 and in_per_group == 1:  # depthwise, possibly with a depth multiplier
            multiplier = out_channels // groups
            ctx.couple(y, 1, x, 1, Stride(out_channels, multiplier, x_shape[1]))
            return
        if groups > 1:
            ctx.couple(y, 1, y, 1, _within_group(out_channels, groups))
            if on_input:
                ctx.couple(x, 1, weight, 1, _within_group(x_shape[1], groups))
        elif on_input:
            ctx.couple(x, 1, weight, 1)

    def rewrite(self, node: ir.Node, ctx: SurgeryContext) -> None:
        if ctx.kept_positions(required_input(node, 0), 1) is None:
            return  # input channels unchanged: so is the group count
        in_per_group = ctx.new_size(required_input(node, 1), 1)
        groups = ctx.new_size(required_input(node, 0), 1) // in_per_group
        ctx.set_int_attribute(node, "group", groups)


@register_rule("ConvTranspose")
class ConvTransposeRule(OpRule):
    """Weight is [C_in, C_out / group, k...]; plain and depthwise transposed convs are pruned."""

    def seed(self, node: ir.Node, ctx: AnalysisContext) -> None:
        ctx.activate(node.outputs[0], 1)

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        x, weight, bias = required_input(node, 0), required_input(node, 1), input_or_none(node, 2)
        y = node.outputs[0]
        groups = attr_int(node, "group", 1)
        weight_shape = static_shape(weight)
        if weight_shape is None or None in weight_shape:
            ctx.freeze_node(node, port, axis, "unknown weight shape")
            return
        in_channels, out_per_group = weight_shape[0], weight_shape[1]
        assert in_channels is not None and out_per_group is not None
        if _channel_side(node, port, axis, weight_in_axis=0, weight_out_axis=1) is None:
            ctx.freeze_node(node, port, axis, f"axis {axis} of '{port.name}' is not a channel axis")
            return
        if groups == 1:
            ctx.couple(x, 1, weight, 0)
            ctx.couple(y, 1, weight, 1)
            ctx.couple(y, 1, bias, 0)
        elif groups == in_channels:  # depthwise: output o comes from input o // out_per_group
            ctx.couple(x, 1, weight, 0)
            ctx.couple(y, 1, bias, 0)
            ctx.couple(y, 1, x, 1, Stride(in_channels * out_per_group, out_per_group, in_channels))
        else:
            ctx.freeze_node(node, port, axis, f"grouped ConvTranspose (group={groups})")

    def rewrite(self, node: ir.Node, ctx: SurgeryContext) -> None:
        if attr_int(node, "group", 1) > 1:
            ctx.set_int_attribute(node, "group", ctx.new_size(required_input(node, 1), 0))
