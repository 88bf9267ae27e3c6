"""Which axis a split channel axis is coupled to: heads or head dimensions, or the largest axis.

Used by the Reshape rule when one channel axis faces several sized axes on the other side.
"""

from __future__ import annotations

import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.rules.helpers import constant_ints


def split_target(
    port: ir.Value,
    axis: int,
    other_value: ir.Value,
    sized: list[int],
    other_shape: tuple[int | None, ...],
    ctx: AnalysisContext,
) -> int:
    """The axis a channel axis split into (or merged from) ``sized`` axes is coupled to.

    A last (channels-last) axis split in a transformer is ``[H*D] -> [H, D]``, possibly with the
    fused QKV axis ``[3*H*D] -> [3, H, D]``: an axis that is later selected along (q/k/v taken by
    Gather, Split or Slice) is never the unit; among the rest, ``attention="heads"`` takes the
    outermost (whole heads), ``"head_dim"`` the innermost. Other splits (channel shuffle) take the
    largest axis, so the kept channel set stays a rectangle.
    """
    if len(sized) == 1:
        return sized[0]
    port_shape = static_shape(port) or ()
    if axis == len(port_shape) - 1:
        candidates = [a for a in sized if not selected_along(other_value, a)] or sized
        return candidates[0] if ctx.options.attention == "heads" else candidates[-1]
    return max(sized, key=lambda a: other_shape[a] or 0)


_SELECTING_OPS = ("Gather", "Split", "Slice")


def selected_along(value: ir.Value, axis: int, depth: int = 6) -> bool:
    """Whether ``value`` is indexed along ``axis`` (through layout-only ops) by Gather/Split/Slice."""
    if depth == 0:
        return False
    value_rank = len(value.shape) if value.shape is not None else 0
    for consumer in value.consumers():
        if consumer.inputs[0] is not value:
            continue
        op = consumer.op_type
        if op in _SELECTING_OPS and axis in _selecting_axes(consumer, value_rank):
            return True
        next_axis = _layout_axis(consumer, axis, value_rank)
        if next_axis is not None and selected_along(consumer.outputs[0], next_axis, depth - 1):
            return True
    return False


def _selecting_axes(node: ir.Node, value_rank: int) -> set[int]:
    if node.op_type == "Slice":
        axes = constant_ints(node.inputs[3]) if len(node.inputs) > 3 else None
        starts = constant_ints(node.inputs[1]) or []
        axes = axes if axes is not None else list(range(len(starts)))
    else:
        attribute = node.attributes.get("axis")
        axes = [int(attribute.value) if attribute is not None else 0]
    return {a + value_rank if a < 0 else a for a in axes}


def _layout_axis(node: ir.Node, axis: int, value_rank: int) -> int | None:
    """Where ``axis`` of a Transpose/Unsqueeze/Squeeze input lands in its output (None: elsewhere)."""
    if node.op_type == "Transpose":
        perm = node.attributes.get("perm")
        order = (
            [int(p) for p in perm.value] if perm is not None else list(reversed(range(value_rank)))
        )
        return order.index(axis) if axis in order else None
    if node.op_type not in ("Unsqueeze", "Squeeze"):
        return None
    attribute = node.attributes.get("axes")
    axes = [int(a) for a in attribute.value] if attribute is not None else None
    if axes is None and len(node.inputs) > 1:
        axes = constant_ints(node.inputs[1])
    if axes is None:
        return None
    if node.op_type == "Unsqueeze":
        out_rank = value_rank + len(axes)
        inserted = sorted(a + out_rank if a < 0 else a for a in axes)
        kept = [a for a in range(out_rank) if a not in inserted]
        return kept[axis]
    removed = {a + value_rank if a < 0 else a for a in axes}
    if axis in removed:
        return None
    return axis - sum(1 for a in removed if a < axis)
