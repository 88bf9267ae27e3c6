"""Reshape, Flatten, Squeeze, Unsqueeze: axes regrouped without moving data.

Input and output shapes are split into *blocks*: the smallest runs of axes with equal products.
Inside a block, positions are row-major. A channel axis that is split into several axes (channel
shuffle's [C] -> [g, C/g], heads' [H*D] -> [H, D]) couples to the largest of them, so every kept
channel set stays a rectangle and the new shape is still valid; merging axes (Flatten of
[C, H, W] into C*H*W features) couples each flattened feature with its channel.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext, static_shape
from onnx_graph.index_map import ExplicitMap
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import constant_ints, required_input
from onnx_graph.rules.split_policy import split_target
from onnx_graph.surgery_context import SurgeryContext

Block = tuple[list[int], list[int]]


def reshape_blocks(
    in_shape: tuple[int | None, ...], out_shape: tuple[int | None, ...]
) -> list[Block] | None:
    """Pair runs of input and output axes with equal element counts (None if impossible).

    Unknown sizes (a dynamic batch) must face an unknown size and form a block of their own.
    """
    blocks: list[Block] = []
    i = j = 0
    while i < len(in_shape) or j < len(out_shape):
        if i == len(in_shape) or j == len(out_shape):
            rest_in, rest_out = list(range(i, len(in_shape))), list(range(j, len(out_shape)))
            if any(in_shape[k] != 1 for k in rest_in) or any(out_shape[k] != 1 for k in rest_out):
                return None
            if not blocks:
                return None
            blocks[-1][0].extend(rest_in)
            blocks[-1][1].extend(rest_out)
            break
        if in_shape[i] is None or out_shape[j] is None:
            if in_shape[i] is not None or out_shape[j] is not None:
                return None
            blocks.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        block_in, block_out = [i], [j]
        product_in, product_out = int(in_shape[i] or 0), int(out_shape[j] or 0)
        i, j = i + 1, j + 1
        while product_in != product_out:
            next_in = in_shape[i] if i < len(in_shape) else None
            next_out = out_shape[j] if j < len(out_shape) else None
            if product_in < product_out and next_in is not None:
                product_in *= next_in
                block_in.append(i)
                i += 1
            elif product_out < product_in and next_out is not None:
                product_out *= next_out
                block_out.append(j)
                j += 1
            else:
                return None
        blocks.append((block_in, block_out))
    return blocks


def _coordinates(sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Row-major coordinate of every flat position of a block, per axis of the block."""
    flat = np.arange(int(np.prod(sizes)), dtype=np.int64)
    coordinates, stride = [], 1
    for size in reversed(sizes):
        coordinates.append((flat // stride) % size)
        stride *= size
    return coordinates[::-1]


@lru_cache(maxsize=512)
def _block_map(
    here_sizes: tuple[int, ...], here_index: int, there_sizes: tuple[int, ...], there_index: int
) -> ExplicitMap:
    """Which positions of one block axis meet which of another: they share a flat position.

    Depends on the block sizes alone, so a transformer's repeated layers share one result.
    """
    here = _coordinates(here_sizes)[here_index]
    there = _coordinates(there_sizes)[there_index]
    width = int(there.max()) + 1
    keys = np.unique(here * width + there)
    source, target = keys // width, keys % width
    source.flags.writeable = target.flags.writeable = False  # shared between calls
    return ExplicitMap(source, target)


def _only_sized(shape: tuple[int | None, ...], axes: list[int]) -> list[int]:
    """The axes of a block with more than one position."""
    return [a for a in axes if (shape[a] or 0) > 1]


@register_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
class ReshapeRule(OpRule):
    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        data, output = required_input(node, 0), node.outputs[0]
        if port is not data and port is not output:
            return  # the shape/axes input carries no channels
        in_shape, out_shape = static_shape(data), static_shape(output)
        blocks = reshape_blocks(in_shape, out_shape) if in_shape and out_shape else None
        if blocks is None or in_shape is None or out_shape is None:
            ctx.freeze_node(node, port, axis, "cannot relate input and output shapes")
            return
        on_input = port is data
        block = next(b for b in blocks if axis in (b[0] if on_input else b[1]))
        here_shape, here_axes = (in_shape, block[0]) if on_input else (out_shape, block[1])
        other_value, other_shape, other_axes = (
            (output, out_shape, block[1]) if on_input else (data, in_shape, block[0])
        )
        targets = [a for a in other_axes if ctx.live(other_value, a)]
        if not targets:
            sized = [a for a in other_axes if (other_shape[a] or 0) > 1]
            if not sized:
                return
            targets = [split_target(port, axis, other_value, sized, other_shape, ctx)]
        if node.op_type == "Reshape" and on_input:
            for target in targets:
                if not _target_rewritable(node, target):
                    ctx.freeze_node(
                        node, port, axis, f"shape entry {target} is computed at run time"
                    )
                    return
        if _only_sized(here_shape, here_axes) == [axis] and len(targets) == 1:
            if _only_sized(other_shape, other_axes) == targets:  # [1, C] <-> [C]: same positions
                ctx.couple(port, axis, other_value, targets[0])
                return
        here_sizes = tuple(int(here_shape[a]) for a in here_axes)  # type: ignore[arg-type]
        there_sizes = tuple(int(other_shape[a]) for a in other_axes)  # type: ignore[arg-type]
        for target in targets:
            mapping = _block_map(
                here_sizes, here_axes.index(axis), there_sizes, other_axes.index(target)
            )
            ctx.couple(port, axis, other_value, target, mapping)

    def rewrite(self, node: ir.Node, ctx: SurgeryContext) -> None:
        if node.op_type != "Reshape":
            return
        output = node.outputs[0]
        assert output.shape is not None
        for axis in range(len(output.shape)):
            if ctx.kept_positions(output, axis) is not None:
                _rewrite_target(node, axis, output, ctx)


def _shape_entry(node: ir.Node, axis: int) -> tuple[ir.Node, int, int] | None:
    """Where entry ``axis`` of a Reshape target is stored: (node, input index, index in it).

    The target is either a constant or a Concat of pieces (dynamic-batch exports build it from
    Shape -> Slice/Gather pieces and constants); None when the entry is computed at run time.
    """
    target = required_input(node, 1)
    if target.const_value is not None:
        return node, 1, axis
    producer = target.producer()
    if producer is None or producer.op_type != "Concat":
        return None
    offset = 0
    for index, piece in enumerate(producer.inputs):
        shape = static_shape(piece)
        length = shape[0] if shape and len(shape) == 1 else None
        if length is None:
            return None
        if offset <= axis < offset + length:
            return (
                (producer, index, axis - offset)
                if piece and piece.const_value is not None
                else None
            )
        offset += length
    return None


def _target_rewritable(node: ir.Node, axis: int) -> bool:
    entry = _shape_entry(node, axis)
    if entry is None:
        return False
    holder, index, position = entry
    values = constant_ints(required_input(holder, index)) or []
    return position < len(values)


def _rewrite_target(
    node: ir.Node, axis: int, output: ir.Value, ctx: SurgeryContext, keep_ones: bool = False
) -> None:
    entry = _shape_entry(node, axis)
    if entry is None:
        raise ValueError(f"Reshape node '{node.name}': target entry {axis} is not constant")
    holder, index, position = entry
    values = np.array(ctx.constant(required_input(holder, index)), dtype=np.int64).reshape(-1)
    if values[position] in (0, -1) or (keep_ones and values[position] == 1):
        return  # copied from the input or inferred: follows the pruned input by itself
    kept = ctx.kept_positions(output, axis)
    assert kept is not None
    values[position] = len(kept)  # the value's own shape may be unknown (dynamic exports)
    ctx.replace_constant_input(holder, index, values)
