"""GatherND: trailing data axes that are not indexed pass their channels to the output.

Swin V2 gathers its relative position bias ``[(2W-1)^2, heads]`` with ``[N*N, 1]`` indices: the
heads axis of the bias table is a trailing axis and carries the heads group through.
"""

from __future__ import annotations

import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import attr_int


@register_rule("GatherND")
class GatherNDRule(OpRule):
    """output = indices.shape[:-1] + data.shape[batch_dims + k:], with k = indices.shape[-1]."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, indices, output = node.inputs[0], node.inputs[1], node.outputs[0]
        indices_shape = static_shape(indices)
        if port is indices or indices_shape is None or indices_shape[-1] is None:
            ctx.freeze_node(node, port, axis, "gathernd indices")
            return
        batch_dims = attr_int(node, "batch_dims", 0)
        indexed = indices_shape[-1]
        first_kept = batch_dims + indexed
        shift = len(indices_shape) - 1 - first_kept  # data axis a >= first_kept -> output a + shift
        data_axis = axis if port is data else axis - shift
        if port is output and axis < batch_dims:
            data_axis = axis
        if batch_dims <= data_axis < first_kept or (
            port is output and batch_dims <= axis < len(indices_shape) - 1
        ):
            ctx.freeze_node(node, port, axis, "gathers along the channel axis")
            return
        if data_axis < batch_dims:
            ctx.couple(data, data_axis, output, data_axis)
            ctx.couple(data, data_axis, indices, data_axis)
            return
        ctx.couple(data, data_axis, output, data_axis + shift)
