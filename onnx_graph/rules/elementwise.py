"""Elementwise ops: channel-preserving activations alias their axes; binary ops broadcast."""

from __future__ import annotations

import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import rank, same_axis_everywhere

UNARY_OPS = (
    "Relu",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Mish",
    "ThresholdedRelu",
    "Shrink",
    "Exp",
    "Log",
    "Sqrt",
    "Abs",
    "Neg",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sin",
    "Cos",
    "Sign",
    "Clip",
    "Identity",
    "Dropout",
    "Cast",
    "CastLike",
    "Not",
    "IsNaN",
    "IsInf",
    "Swish",
)


@register_rule(*UNARY_OPS)
class UnaryRule(OpRule):
    """Channel-preserving: input channels are output channels, on every axis."""

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        same_axis_everywhere(node, port, axis, ctx)


BINARY_OPS = (
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Mean",
    "Sum",
    "PRelu",
    "Where",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Mod",
    "BitShift",
)
# Removed channels of these inputs are written as 1 by zero_out, never 0 (no division by zero).
_NEUTRAL_ONE = {("Div", 1), ("Pow", 1), ("Mod", 1)}


@register_rule(*BINARY_OPS)
class BroadcastRule(OpRule):
    """Numpy-broadcasting ops: axes aligned from the right are the same channels.

    An input of size 1 on the axis (a scalar or a per-sample constant) broadcasts and is not coupled;
    a per-channel constant ([C, 1, 1], squeeze-excitation scales) becomes a parameter member.
    """

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        output = node.outputs[0]
        output_rank, port_rank = rank(output), rank(port)
        if output_rank is None or port_rank is None:
            ctx.freeze_node(node, port, axis, "unknown rank")
            return
        output_axis = axis + (output_rank - port_rank)
        for index, value in enumerate([*node.inputs, output]):
            value_rank = rank(value)
            if value is None or value_rank is None:
                continue
            value_axis = output_axis - (output_rank - value_rank)
            if value_axis < 0:
                continue
            ctx.couple(port, axis, value, value_axis)
            if (node.op_type, index) in _NEUTRAL_ONE and value.const_value is not None:
                ctx.set_fill(value, value_axis, 1.0)
