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
from onnx_graph.analysis_context import AnalysisContext, AnalysisOptions
from onnx_graph.groups import GroupMember, GroupSet, PruningGroup
from onnx_graph.prepare import prepare
from onnx_graph.rules.base import rule_for
from onnx_graph.shape_targets import constant_reshape_targets
from onnx_graph.static_shapes import has_symbolic_dims, with_concrete_shapes

logger = logging.getLogger(__name__)


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
    if has_symbolic_dims(model):
        constant_reshape_targets(model)  # in place: computed targets would read stale sizes
        model = with_concrete_shapes(model) or model  # relate channel axes at batch 1
    ctx = AnalysisContext(model.graph, AnalysisOptions(attention, allow_inexact))
    for node in model.graph:
        rule = rule_for(node)
        if rule is not None:
            ctx.current_node = node
            rule.seed(node, ctx)
    _walk(model.graph, ctx)
    groups = _build_groups(ctx)
    logger.info(
        "analysis: %d channel axes, %d groups (%d prunable) in %.2fs",
        len(ctx.axes), len(groups), len(groups.prunable), time.perf_counter() - start,
    )
    return groups


def _walk(graph: ir.Graph, ctx: AnalysisContext) -> None:
    values = _values_by_name(graph)
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
                ctx.freeze_node(node, value, channel_axis.axis, f"no rule for op {domain}{node.op_type}")
                continue
            try:
                rule.propagate(node, value, channel_axis.axis, ctx)
            except Exception as error:  # a rule bug must freeze, never crash the analysis
                logger.warning("rule %s failed on node %s: %s", type(rule).__name__, node.name, error)
                ctx.freeze_node(node, value, channel_axis.axis, f"rule error ({error})")
    ctx.current_node = None


def _values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    values: dict[str, ir.Value] = {v.name: v for v in graph.inputs if v.name}
    values.update({name: v for name, v in graph.initializers.items()})
    for node in graph:
        for value in (*node.inputs, *node.outputs):
            if value is not None and value.name:
                values[value.name] = value
    return values


def _build_groups(ctx: AnalysisContext) -> GroupSet:
    total = ctx.total_positions
    source, target = ctx.edges()
    adjacency = coo_matrix((np.ones(len(source), dtype=np.int8), (source, target)), shape=(total, total))
    _, position_channel = connected_components(adjacency, directed=False)
    position_channel = position_channel.astype(np.int64)
    num_channels = int(position_channel.max()) + 1 if total else 0

    # A group is the set of channels touching exactly the same channel axes.
    num_axes = max(1, len(ctx.axes))
    axis_of_position = np.repeat(np.arange(len(ctx.axes)), [a.size for a in ctx.axes])
    keys = _sorted_unique(position_channel * num_axes + axis_of_position)  # by channel, axis
    pair_axis = keys % num_axes
    channel_starts = np.concatenate([[0], np.flatnonzero(np.diff(keys // num_axes)) + 1])
    # A channel's signature is its set of axes, hashed as a sum of random 64-bit words per axis
    # (a collision among a few thousand signatures has probability ~1e-13).
    words = np.random.default_rng(0).integers(0, 2**63, size=num_axes, dtype=np.uint64)
    signature = np.add.reduceat(words[pair_axis], channel_starts) if len(keys) else words[:0]
    _, first_channel, inverse = np.unique(signature, return_index=True, return_inverse=True)
    group_order = np.argsort(np.argsort(first_channel))  # number groups by first appearance
    channel_group = group_order[inverse.reshape(-1)].astype(np.int64)
    num_groups = len(first_channel)

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
    # One stable sort of all positions by (axis, group) yields every member's positions in order.
    member_key = axis_of_position * num_groups + channel_group[position_channel]
    by_member = np.argsort(member_key, kind="stable")
    sorted_keys = member_key[by_member]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(sorted_keys)) + 1, [total]])
    if not total:
        bounds = bounds[:0]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        axis_index, group_id = divmod(int(sorted_keys[start]), num_groups)
        channel_axis = ctx.axes[axis_index]
        global_positions = by_member[start:stop]
        members[group_id].append(
            GroupMember(
                channel_axis.value_name, channel_axis.axis, channel_axis.size,
                channel_axis.is_parameter, global_positions - channel_axis.base,
                channel_rank[position_channel[global_positions]], tuple(sorted(channel_axis.nodes)),
            )
        )
        for reasons, collected in ((channel_axis.frozen_reasons, frozen[group_id]),
                                   (channel_axis.inexact_reasons, inexact[group_id])):
            for reason in reasons:
                message = f"{channel_axis.value_name}[{channel_axis.axis}] {reason}"
                if message not in collected:
                    collected.append(message)
    groups = [
        PruningGroup(
            group_id, int(group_sizes[group_id]), members[group_id], frozen[group_id], inexact[group_id]
        )
        for group_id in range(num_groups)
    ]
    return GroupSet(ctx.axes, position_channel, channel_group, channel_rank, groups)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` for 1-D integers by sorting (numpy's hash-based unique is slower here)."""
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered
