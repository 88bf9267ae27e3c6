"""Small helpers shared by op rules: axis classes, attributes, ranks and constant inputs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, constant_array

AxisRef = tuple[ir.Value | None, int]


def couple_classes(
    node: ir.Node,
    port: ir.Value,
    axis: int,
    ctx: AnalysisContext,
    classes: Iterable[Sequence[AxisRef]],
) -> None:
    """Couple the live axis to every axis in its class; freeze it when no class holds it.

    Each class lists (value, axis) pairs that are the same channels (identity index map).
    """
    for axis_class in classes:
        if any(value is port and member_axis == axis for value, member_axis in axis_class):
            for value, member_axis in axis_class:
                if value is not None and not (value is port and member_axis == axis):
                    ctx.couple(port, axis, value, member_axis)
            return
    ctx.freeze_node(node, port, axis, f"axis {axis} of '{port.name}' does not carry channels")


def required_input(node: ir.Node, index: int) -> ir.Value:
    """Input ``index`` of ``node``; a missing required input is a malformed graph."""
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        raise ValueError(f"{node.op_type} node '{node.name}' has no input {index}")
    return value


def rank(value: ir.Value | None) -> int | None:
    """The value's rank, None when unknown (its shape's length: no dims are read)."""
    shape = value.shape if value is not None else None
    return None if shape is None else len(shape)


def attr_int(node: ir.Node, name: str, default: int) -> int:
    attribute = node.attributes.get(name)
    return default if attribute is None else int(attribute.value)


def attr_ints(node: ir.Node, name: str) -> list[int] | None:
    attribute = node.attributes.get(name)
    return None if attribute is None else [int(v) for v in attribute.value]


def input_or_none(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def constant_ints(value: ir.Value | None) -> list[int] | None:
    """A constant integer input as a Python list (None when absent or not constant)."""
    array = constant_array(value)
    return None if array is None else [int(v) for v in np.asarray(array).reshape(-1)]


def normalize_axis(axis: int, value_rank: int) -> int:
    return axis + value_rank if axis < 0 else axis


def same_axis_everywhere(node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
    """Channel-preserving op: the axis of the first input is the same axis of every output."""
    values = [node.inputs[0], *node.outputs] if node.inputs else list(node.outputs)
    for value in values:
        if value is None or value is port:
            continue
        if rank(value) is None:
            ctx.freeze_node(node, port, axis, f"'{value.name}' has no known shape")
        elif rank(value) == rank(port):
            ctx.couple(port, axis, value, axis)
