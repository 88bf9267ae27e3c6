"""Expand: numpy broadcasting to a target shape (class tokens repeated over the batch)."""

from __future__ import annotations

import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.reshape import _rewrite_target, _target_rewritable
from onnx_graph.surgery_context import SurgeryContext


@register_rule("Expand")
class ExpandRule(OpRule):
    """Axes aligned from the right; an input axis of the output's size passes its channels through.

    A target entry equal to the channel count (rather than 1 or a run-time batch) is rewritten.
    """

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, output = node.inputs[0], node.outputs[0]
        if port is not data and port is not output:
            return
        data_shape, output_shape = static_shape(data), static_shape(output)
        if data_shape is None or output_shape is None:
            ctx.freeze_node(node, port, axis, "unknown rank")
            return
        shift = len(output_shape) - len(data_shape)
        output_axis = axis + shift if port is data else axis
        data_axis = output_axis - shift
        if data_axis < 0 or data_shape[data_axis] != output_shape[output_axis]:
            ctx.freeze_node(node, port, axis, "broadcasts along the channel axis")
            return
        if not _target_rewritable(node, output_axis):
            ctx.freeze_node(node, port, axis, f"shape entry {output_axis} is computed at run time")
            return
        ctx.couple(data, data_axis, output, output_axis)

    def rewrite(self, node: ir.Node, ctx: SurgeryContext) -> None:
        output = node.outputs[0]
        assert output.shape is not None
        for axis in range(len(output.shape)):
            if ctx.kept_positions(output, axis) is not None:
                _rewrite_target(node, axis, output, ctx, keep_ones=True)
