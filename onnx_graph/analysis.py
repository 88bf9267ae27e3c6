"""SPA analysis: walk the graph with the op rules and merge coupled channels into pruning groups."""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
import onnx_ir as ir
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import onnx_graph.rules  # noqa: F401  (registers every rule)
from onnx_graph.analysis_context import (
    AnalysisContext,
    AnalysisOptions,
    ChannelAxis,
    values_by_name,
)
from onnx_graph.gc_pause import without_gc
from onnx_graph.groups import GroupMember, GroupSet, PruningGroup
from onnx_graph.local_shapes import local_shapes
from onnx_graph.prepare import prepare
from onnx_graph.rules.base import rule_for
from onnx_graph.shape_targets import constant_reshape_targets
from onnx_graph.static_shapes import (
    Shapes,
    SkeletonInference,
    completed_shapes,
    concrete_shapes,
    has_symbolic_dims,
)

logger = logging.getLogger(__name__)


@without_gc
def analyze(
    model: ir.Model,
    *,
    prepared: bool = False,
    attention: Literal["head_dim", "heads"] = "head_dim",
    allow_inexact: bool = False,
) -> GroupSet:
    """Find every set of coupled channels in ``model``.

    Args:
        model: An onnx-ir model; it is normalised in place (names, lifted constants, shapes)
            unless ``prepared`` says that was done already.
        prepared: Skip ``prepare`` (the caller already ran it on this model).
        attention: Pruning unit inside attention: ``"head_dim"`` (dimensions of every head,
            uniformly) or ``"heads"`` (whole heads: their Q, K, V and output-projection slices).
        allow_inexact: Couple the channels of a LayerNorm-normalised axis (a transformer's
            embedding) instead of freezing it; the group is marked inexact (statistics change).

    Returns:
        The groups, each knowing its members and whether (and why not) it can be pruned.
    """
    start = time.perf_counter()
    if attention not in ("head_dim", "heads"):
        raise ValueError(f"attention must be 'head_dim' or 'heads', got {attention!r}")
    if not prepared:
        prepare(model)
    options = AnalysisOptions(attention, allow_inexact)
    batch_one = _shapes_at_batch_one(model) if has_symbolic_dims(model) else None
    with concrete_shapes(model, batch_one or {}):  # relate channel axes at batch 1
        ctx = _walk_graph(model.graph, options)
    groups = _build_groups(ctx)
    logger.info(
        "analysis: %d channel axes, %d groups (%d prunable) in %.2fs",
        len(ctx.axes),
        len(groups),
        len(groups.prunable),
        time.perf_counter() - start,
    )
    return groups


def _shapes_at_batch_one(model: ir.Model) -> Shapes | None:
    """Every value's shape at batch 1; computed Reshape targets become constants on the way.

    In place: computed targets would read stale sizes after pruning.
    """
    constant_reshape_targets(model)
    from_graph = local_shapes(model)
    if from_graph is not None:
        return from_graph  # read off the graph: no whole-model inference
    inference = SkeletonInference(model)
    quick = inference.at(1, data_propagation=False)
    completed = completed_shapes(model, quick) if quick is not None else None
    return completed if completed is not None else inference.at(1)


def _walk_graph(graph: ir.Graph, options: AnalysisOptions) -> AnalysisContext:
    """Seed every rule, then follow channel axes until no new one appears."""
    ctx = AnalysisContext(graph, options)
    for node in graph:
        rule = rule_for(node)
        if rule is not None:
            ctx.current_node = node
            rule.seed(node, ctx)
    _walk(graph, ctx)
    return ctx


def _walk(graph: ir.Graph, ctx: AnalysisContext) -> None:
    values = values_by_name(graph)
    while (channel_axis := ctx.next_pending()) is not None:
        value = values[channel_axis.value_name]
        nodes: list[ir.Node] = []
        producer = value.producer()
        if producer is not None:
            nodes.append(producer)
        for consumer in value.consumers():
            if consumer not in nodes:
                nodes.append(consumer)
        for node in nodes:
            ctx.current_node = node
            rule = rule_for(node)
            if rule is None:
                domain = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
                ctx.freeze_node(
                    node, value, channel_axis.axis, f"no rule for op {domain}{node.op_type}"
                )
                continue
            try:
                rule.propagate(node, value, channel_axis.axis, ctx)
            except Exception as error:  # a rule bug must freeze, never crash the analysis
                logger.warning(
                    "rule %s failed on node %s: %s", type(rule).__name__, node.name, error
                )
                ctx.freeze_node(node, value, channel_axis.axis, f"rule error ({error})")
    ctx.current_node = None


def _position_channels(ctx: AnalysisContext, axis_of_position: np.ndarray) -> np.ndarray:
    """Channel id of every global position: connected components of the coupling graph.

    Most couplings are identities between whole axes (elementwise ops, norms, weights): those
    axes are merged first at axis level, so the position-level components only need the other
    couplings (Concat offsets, Reshape strides, ...) between the merged axes' positions.
    """
    sizes = np.array([a.size for a in ctx.axes], dtype=np.int64)
    bases = np.array([a.base for a in ctx.axes], dtype=np.int64)
    pairs = ctx.identity_pairs()
    num_axes = len(sizes)
    axis_graph = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(num_axes, num_axes)
    )
    _, axis_class = connected_components(axis_graph, directed=False)
    # Identity couplings only join equal sizes, so a class's positions are those of any member.
    class_size = np.zeros(int(axis_class.max()) + 1 if num_axes else 0, dtype=np.int64)
    class_size[axis_class] = sizes
    class_base = np.concatenate([[0], np.cumsum(class_size)[:-1]]).astype(np.int64)
    compact = class_base[axis_class][axis_of_position] + (
        np.arange(ctx.total_positions, dtype=np.int64) - bases[axis_of_position]
    )
    compact_total = int(class_size.sum())
    source, target = ctx.edges()
    if not len(source):
        return compact  # identities only (a CNN): each merged position is a channel
    adjacency = coo_matrix(
        (np.ones(len(source), dtype=np.int8), (compact[source], compact[target])),
        shape=(compact_total, compact_total),
    )
    _, compact_channel = connected_components(adjacency, directed=False)
    return compact_channel.astype(np.int64)[compact]


def _member_runs(
    axes: list[ChannelAxis], position_group: np.ndarray
) -> list[list[tuple[int, np.ndarray]]]:
    """Per channel axis: (group id, the axis's positions in that group), one entry per member.

    Most axes lie in a single group (whole-axis member); only Concat outputs, flattened and fused
    axes are split, and only they are sorted.
    """
    if not axes:
        return []
    bases = np.fromiter((a.base for a in axes), dtype=np.int64, count=len(axes))
    lowest = np.minimum.reduceat(position_group, bases).tolist()
    highest = np.maximum.reduceat(position_group, bases).tolist()
    runs: list[list[tuple[int, np.ndarray]]] = []
    for channel_axis, low, high in zip(axes, lowest, highest, strict=True):
        if low == high:
            runs.append([(low, np.arange(channel_axis.size, dtype=np.int64))])
            continue
        local_groups = position_group[channel_axis.base : channel_axis.base + channel_axis.size]
        order = np.argsort(local_groups, kind="stable")
        cuts = np.flatnonzero(np.diff(local_groups[order])) + 1
        first_groups = local_groups[order][np.r_[0, cuts]].tolist()
        runs.append(list(zip(first_groups, np.split(order, cuts), strict=True)))
    return runs


def _build_groups(ctx: AnalysisContext) -> GroupSet:
    total = ctx.total_positions
    axis_of_position = np.repeat(
        np.arange(len(ctx.axes), dtype=np.int64), [a.size for a in ctx.axes]
    )
    position_channel = _position_channels(ctx, axis_of_position)
    num_channels = int(position_channel.max()) + 1 if total else 0

    # A group is the set of channels touching exactly the same channel axes (with the same number
    # of positions on each). A channel's signature is the wrapping sum of one random 64-bit key per
    # position's axis (collisions have probability ~2^-64 per pair): vectorised on large models.
    # Groups only partition channels for planning; surgery works on channels, so a rare split of
    # one group into two never affects exactness.
    axis_keys = np.random.default_rng(0).integers(1, 2**63, size=len(ctx.axes), dtype=np.uint64)
    signature = np.zeros(num_channels, dtype=np.uint64)
    np.add.at(signature, position_channel, axis_keys[axis_of_position])
    _, channel_group = np.unique(signature, return_inverse=True)
    channel_group = channel_group.astype(np.int64).reshape(-1)
    num_groups = int(channel_group.max()) + 1 if num_channels else 0

    # Order a group's channels by their first position on the group's first axis.
    first_position = np.full(num_channels, np.iinfo(np.int64).max)
    first_position[position_channel[::-1]] = np.arange(total)[::-1]  # the last write wins
    order = np.lexsort((first_position, channel_group))
    channel_rank = np.empty(num_channels, dtype=np.int64)
    group_sizes = np.bincount(channel_group, minlength=num_groups)
    starts = np.concatenate([[0], np.cumsum(group_sizes)[:-1]])
    channel_rank[order] = np.arange(num_channels) - np.repeat(starts, group_sizes)

    members: list[list[GroupMember]] = [[] for _ in range(num_groups)]
    frozen: list[list[str]] = [[] for _ in range(num_groups)]
    inexact: list[list[str]] = [[] for _ in range(num_groups)]
    position_group = channel_group[position_channel]
    position_rank = channel_rank[position_channel]  # one gather; members take slices of it
    for channel_axis, runs in zip(ctx.axes, _member_runs(ctx.axes, position_group), strict=True):
        base, size = channel_axis.base, channel_axis.size
        nodes = tuple(sorted(channel_axis.nodes))
        for group_id, local_positions in runs:
            ranks = (
                position_rank[base : base + size]
                if len(runs) == 1  # the whole axis, in order
                else position_rank[base + local_positions]
            )
            members[group_id].append(
                GroupMember(
                    channel_axis.value_name,
                    channel_axis.axis,
                    size,
                    channel_axis.is_parameter,
                    local_positions,
                    ranks,
                    nodes,
                )
            )
            for reasons, collected in (
                (channel_axis.frozen_reasons, frozen[group_id]),
                (channel_axis.inexact_reasons, inexact[group_id]),
            ):
                for reason in reasons:
                    message = f"{channel_axis.value_name}[{channel_axis.axis}] {reason}"
                    if message not in collected:
                        collected.append(message)
    groups = [
        PruningGroup(
            group_id,
            int(group_sizes[group_id]),
            members[group_id],
            frozen[group_id],
            inexact[group_id],
        )
        for group_id in range(num_groups)
    ]
    return GroupSet(ctx.axes, position_channel, channel_group, channel_rank, groups)
