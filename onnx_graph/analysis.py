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
    axis_of_position = np.repeat(np.arange(len(ctx.axes)), [a.size for a in ctx.axes])
    pairs = np.unique(np.stack([position_channel, axis_of_position], axis=1), axis=0)
    split_at = np.flatnonzero(np.diff(pairs[:, 0])) + 1
    signatures = [tuple(chunk[:, 1]) for chunk in np.split(pairs, split_at)] if len(pairs) else []
    signature_group: dict[tuple[int, ...], int] = {}
    channel_group = np.empty(num_channels, dtype=np.int64)
    for channel, signature in enumerate(signatures):
        channel_group[channel] = signature_group.setdefault(signature, len(signature_group))

    # Order a group's channels by their first position on the group's first axis.
    first_position = np.full(num_channels, np.iinfo(np.int64).max)
    np.minimum.at(first_position, position_channel, np.arange(total))
    order = np.lexsort((first_position, channel_group))
    channel_rank = np.empty(num_channels, dtype=np.int64)
    group_sizes = np.bincount(channel_group, minlength=len(signature_group))
    starts = np.concatenate([[0], np.cumsum(group_sizes)[:-1]])
    channel_rank[order] = np.arange(num_channels) - np.repeat(starts, group_sizes)

    members: list[list[GroupMember]] = [[] for _ in signature_group]
    frozen: list[list[str]] = [[] for _ in signature_group]
    inexact: list[list[str]] = [[] for _ in signature_group]
    for channel_axis in ctx.axes:
        span = position_channel[channel_axis.base : channel_axis.base + channel_axis.size]
        axis_groups = channel_group[span]
        for group_id in np.unique(axis_groups):
            positions = np.flatnonzero(axis_groups == group_id)
            members[group_id].append(
                GroupMember(
                    channel_axis.value_name, channel_axis.axis, channel_axis.size,
                    channel_axis.is_parameter, positions, channel_rank[span[positions]],
                    tuple(sorted(channel_axis.nodes)),
                )
            )
            for reason in channel_axis.frozen_reasons:
                message = f"{channel_axis.value_name}[{channel_axis.axis}] {reason}"
                if message not in frozen[group_id]:
                    frozen[group_id].append(message)
            for reason in channel_axis.inexact_reasons:
                message = f"{channel_axis.value_name}[{channel_axis.axis}] {reason}"
                if message not in inexact[group_id]:
                    inexact[group_id].append(message)
    groups = [
        PruningGroup(
            group_id, int(group_sizes[group_id]), members[group_id], frozen[group_id], inexact[group_id]
        )
        for group_id in range(len(signature_group))
    ]
    return GroupSet(ctx.axes, position_channel, channel_group, channel_rank, groups)
