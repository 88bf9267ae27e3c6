"""Normalisations: per-channel ones alias channels; channel-mixing ones freeze or prune whole groups."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.index_map import ExplicitMap, Stride
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import (
    attr_int,
    input_or_none,
    normalize_axis,
    rank,
    required_input,
    same_axis_everywhere,
)
from onnx_graph.surgery_context import SurgeryContext


@register_rule("BatchNormalization", "InstanceNormalization")
class PerChannelNormRule(OpRule):
    """Axis 1 is the channel axis of X, Y and every 1-D parameter (scale, bias, mean, variance)."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        x = required_input(node, 0)
        parameters = [v for v in node.inputs[1:] if v is not None]
        if port in parameters:
            ctx.couple(port, axis, x, 1)
            port, axis = x, 1
        same_axis_everywhere(node, port, axis, ctx)
        if axis == 1:
            for parameter in parameters:
                ctx.couple(x, 1, parameter, 0)
            if node.op_type == "BatchNormalization" and len(node.inputs) > 4:
                ctx.set_fill(
                    required_input(node, 4), 0, 1.0
                )  # variance: keep 1/sqrt(var + eps) finite


@register_rule("GroupNormalization")
class GroupNormRule(OpRule):
    """Statistics mix the channels of a norm group, so a pruning unit is one whole norm group."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        x, scale, bias = required_input(node, 0), input_or_none(node, 1), input_or_none(node, 2)
        num_groups = attr_int(node, "num_groups", 1)
        x_shape = static_shape(x)
        channels = x_shape[1] if x_shape and len(x_shape) > 1 else None
        if port is not x and port is not node.outputs[0]:
            port, axis = x, 1
        same_axis_everywhere(node, port, axis, ctx)
        if axis != 1:
            return
        if channels is None or channels % num_groups:
            ctx.freeze_node(node, x, 1, "channels not divisible by num_groups")
            return
        per_group = channels // num_groups
        index = np.arange(channels, dtype=np.int64)
        ctx.couple(x, 1, x, 1, ExplicitMap(index, index - index % per_group))
        for parameter in (scale, bias):
            parameter_shape = static_shape(parameter)
            if parameter_shape == (channels,):
                ctx.couple(x, 1, parameter, 0)
            elif parameter_shape == (num_groups,):  # opset 18: one value per group
                ctx.couple(x, 1, parameter, 0, Stride(channels, per_group, num_groups))

    def rewrite(self, node: ir.Node, ctx: SurgeryContext) -> None:
        x = required_input(node, 0)
        kept = ctx.kept_positions(x, 1)
        if kept is None:
            return
        per_group = ctx.original_size(x, 1) // attr_int(node, "num_groups", 1)
        ctx.set_int_attribute(node, "num_groups", len(kept) // per_group)


@register_rule("LayerNormalization", "LpNormalization", "LRN", "MeanVarianceNormalization")
class ChannelMixingNormRule(OpRule):
    """Normalised axes mix channels (removing one changes the statistics): those axes freeze."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        if ctx.options.allow_inexact and _couple_layer_norm(node, port, axis, ctx):
            return
        port_rank = rank(port) or 0
        mixed = _mixed_axes(node, port_rank)
        if port is required_input(node, 0) or port is node.outputs[0]:
            if axis in mixed:
                ctx.freeze_node(node, port, axis, f"{node.op_type} statistics mix channels")
                return
            same_axis_everywhere(node, port, axis, ctx)
        else:
            ctx.freeze_node(node, port, axis, f"{node.op_type} parameter")


def _couple_layer_norm(node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> bool:
    """LayerNorm over one (channel) axis: its positions alias X, Y, scale and bias, inexactly.

    Removing a channel changes the mean and variance over the remaining ones, so the zeroed dense
    model is no exact reference: the axis is marked inexact rather than frozen.
    """
    if node.op_type != "LayerNormalization":
        return False
    x, y = node.inputs[0], node.outputs[0]
    if x is None:
        return False
    x_rank = rank(x) or 0
    mixed = _mixed_axes(node, x_rank)
    parameters = [v for v in node.inputs[1:3] if v is not None]
    if len(mixed) != 1 or any(rank(p) != 1 for p in parameters):
        return False
    (channel_axis,) = mixed
    if port in parameters:
        port, axis = x, channel_axis
    if axis != channel_axis:
        return False
    for value in (x, y):
        ctx.couple(port, axis, value, channel_axis)
        ctx.mark_inexact(value, channel_axis, f"{node.op_type} '{node.name}' statistics change")
    for parameter in parameters:
        ctx.couple(x, channel_axis, parameter, 0)
    return True


def _mixed_axes(node: ir.Node, value_rank: int) -> set[int]:
    if node.op_type == "LayerNormalization":
        start = normalize_axis(attr_int(node, "axis", -1), value_rank)
        return set(range(start, value_rank))
    if node.op_type == "LpNormalization":
        return {normalize_axis(attr_int(node, "axis", -1), value_rank)}
    if node.op_type == "MeanVarianceNormalization":
        axes = node.attributes.get("axes")
        return {normalize_axis(int(a), value_rank) for a in (axes.value if axes else (0, 2, 3))}
    return {1}  # LRN: a window across channels
