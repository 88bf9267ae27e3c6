"""Gemm and MatMul: output features, contracted features and batch/token axes."""

from __future__ import annotations

import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import (
    AxisRef,
    attr_int,
    couple_classes,
    input_or_none,
    rank,
    required_input,
)


@register_rule("Gemm")
class GemmRule(OpRule):
    """Y[M, N] = A[M, K] @ B[K, N] + C, with optional transposes; C broadcasts to [M, N]."""

    def seed(self, node: ir.Node, ctx: AnalysisContext) -> None:
        ctx.activate(node.outputs[0], 1)

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        a, b, c = required_input(node, 0), required_input(node, 1), input_or_none(node, 2)
        y = node.outputs[0]
        a_m, a_k = (1, 0) if attr_int(node, "transA", 0) else (0, 1)
        b_k, b_n = (1, 0) if attr_int(node, "transB", 0) else (0, 1)
        c_rank = rank(c) or 0
        classes: list[list[AxisRef]] = [
            [(y, 1), (b, b_n), *([(c, c_rank - 1)] if c_rank >= 1 else [])],
            [(y, 0), (a, a_m), *([(c, 0)] if c_rank == 2 else [])],
            [(a, a_k), (b, b_k)],
        ]
        couple_classes(node, port, axis, ctx, classes)


@register_rule("MatMul")
class MatMulRule(OpRule):
    """Numpy matmul: rows of A, columns of B, the contracted axis and broadcast batch axes.

    A constant B is a Linear layer (the dynamo exporter pre-transposes it to [K, N]); its N axis is
    a source of channels. Two activations (attention scores) couple their shared axes the same way.
    """

    def seed(self, node: ir.Node, ctx: AnalysisContext) -> None:
        b, y = required_input(node, 1), node.outputs[0]
        y_rank = rank(y)
        if b.const_value is not None and y_rank and (rank(b) or 0) >= 2:
            ctx.activate(y, y_rank - 1)

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        a, b, y = required_input(node, 0), required_input(node, 1), node.outputs[0]
        a_rank, b_rank, y_rank = rank(a), rank(b), rank(y)
        if a_rank is None or b_rank is None or y_rank is None:
            ctx.freeze_node(node, port, axis, "unknown rank")
            return
        classes: list[list[AxisRef]] = [[(a, a_rank - 1), (b, 0 if b_rank == 1 else b_rank - 2)]]
        if a_rank >= 2:
            classes.append([(a, a_rank - 2), (y, y_rank - (2 if b_rank >= 2 else 1))])
        if b_rank >= 2:
            classes.append([(b, b_rank - 1), (y, y_rank - 1)])
        batch_axes = y_rank - (a_rank >= 2) - (b_rank >= 2)
        a_shape, b_shape = static_shape(a) or (), static_shape(b) or ()
        for y_axis in range(batch_axes):
            members: list[AxisRef] = [(y, y_axis)]
            for value, value_rank, shape in ((a, a_rank, a_shape), (b, b_rank, b_shape)):
                value_axis = y_axis - (y_rank - value_rank)
                if value_axis >= 0 and shape[value_axis] != 1:
                    members.append((value, value_axis))
            classes.append(members)
        couple_classes(node, port, axis, ctx, classes)
