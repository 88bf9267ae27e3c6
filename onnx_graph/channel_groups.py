"""Channels and pruning groups from the couplings the walk recorded.

Most couplings are identities between whole axes (elementwise ops, norms, weight members). Axes
joined by identities form an *identity class*: position i of every axis in the class is the same
slot, so the class needs one set of positions (its *compact* positions), not one per axis. A ViT-B
has 565 channel axes with 539k positions but only 74 classes with 86k compact positions. Channels
are the connected components of the other couplings (Concat offsets, Reshape strides, head splits)
over compact positions, and everything per channel (its group, its rank) is computed there; the
per-axis views are slices of the class's arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from onnx_graph.analysis_context import AnalysisContext
from onnx_graph.groups import GroupMember, GroupSet, PruningGroup

_NO_POSITION = np.iinfo(np.int64).max


class _Classes(NamedTuple):
    """Identity classes of the channel axes and the channel of each compact position."""

    of_axis: np.ndarray  # axis index -> class
    base: np.ndarray  # class -> its first compact position
    size: np.ndarray  # class -> positions per axis
    channel: np.ndarray  # compact position -> channel id


def build_groups(ctx: AnalysisContext) -> GroupSet:
    """Channels (connected positions) and groups (channels touching the same axes)."""
    axes = ctx.axes
    bases = np.fromiter((a.base for a in axes), dtype=np.int64, count=len(axes))
    classes = _identity_classes(ctx)
    compact_total = int(classes.size.sum())
    num_channels = int(classes.channel.max()) + 1 if compact_total else 0
    class_of_compact = np.repeat(np.arange(len(classes.size)), classes.size)
    offset = np.arange(compact_total, dtype=np.int64) - classes.base[class_of_compact]

    # A group is the set of channels touching exactly the same channel axes (with the same number
    # of positions on each). A channel's signature is the wrapping sum of one random 64-bit key per
    # position's axis (collisions have probability ~2^-64 per pair). A compact position stands for
    # one position on every axis of its class, so it adds the sum of the class's keys.
    # Groups only partition channels for planning; surgery works on channels, so a rare split of
    # one group into two never affects exactness.
    axis_keys = np.random.default_rng(0).integers(1, 2**63, size=len(axes), dtype=np.uint64)
    class_keys = np.zeros(len(classes.size), dtype=np.uint64)
    np.add.at(class_keys, classes.of_axis, axis_keys)
    signature = np.zeros(num_channels, dtype=np.uint64)
    np.add.at(signature, classes.channel, class_keys[class_of_compact])
    _, channel_group = np.unique(signature, return_inverse=True)
    channel_group = channel_group.astype(np.int64).reshape(-1)
    num_groups = int(channel_group.max()) + 1 if num_channels else 0

    # Order a group's channels by their first global position (the lowest over every axis).
    class_first = np.full(len(classes.size), _NO_POSITION, dtype=np.int64)
    np.minimum.at(class_first, classes.of_axis, bases)
    first_position = np.full(num_channels, _NO_POSITION, dtype=np.int64)
    np.minimum.at(first_position, classes.channel, class_first[class_of_compact] + offset)
    order = np.lexsort((first_position, channel_group))
    channel_rank = np.empty(num_channels, dtype=np.int64)
    group_sizes = np.bincount(channel_group, minlength=num_groups)
    starts = np.concatenate([[0], np.cumsum(group_sizes)[:-1]]).astype(np.int64)
    channel_rank[order] = np.arange(num_channels) - np.repeat(starts, group_sizes)

    groups = _groups(ctx, classes, channel_group, channel_rank, group_sizes)
    position_channel = (
        np.concatenate(
            [
                classes.channel[start : start + channel_axis.size]
                for channel_axis, start in zip(axes, classes.base[classes.of_axis], strict=True)
            ]
        )
        if axes
        else np.zeros(0, dtype=np.int64)
    )
    return GroupSet(
        axes,
        position_channel,
        channel_group,
        channel_rank,
        groups,
        axis_class=classes.of_axis,
        class_channel=classes.channel,
        class_size=classes.size,
    )


def _identity_classes(ctx: AnalysisContext) -> _Classes:
    sizes = np.fromiter((a.size for a in ctx.axes), dtype=np.int64, count=len(ctx.axes))
    pairs = ctx.identity_pairs()
    num_axes = len(sizes)
    of_axis = _components(num_axes, pairs[:, 0], pairs[:, 1])
    # Identity couplings only join equal sizes, so a class's size is that of any member.
    class_size = np.zeros(int(of_axis.max()) + 1 if num_axes else 0, dtype=np.int64)
    class_size[of_axis] = sizes
    class_base = np.concatenate([[0], np.cumsum(class_size)[:-1]]).astype(np.int64)
    compact_total = int(class_size.sum())
    edges = ctx.edges()
    if not edges:  # identities only (a CNN): each compact position is a channel
        return _Classes(of_axis, class_base, class_size, np.arange(compact_total, dtype=np.int64))
    start = class_base[of_axis]  # first compact position of each axis's class
    source = np.concatenate([start[axis] + positions for axis, positions, _, _ in edges])
    target = np.concatenate([start[axis] + positions for _, _, axis, positions in edges])
    return _Classes(of_axis, class_base, class_size, _components(compact_total, source, target))


def _components(count: int, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``count`` nodes joined by edges source[i]-target[i].

    The edges go straight into a CSR matrix (one stable sort by source; duplicates and unsorted
    columns are harmless to connectivity) with float64 weights, the dtype scipy's csgraph works
    in: a COO matrix cost a duplicate-summing conversion and a dtype copy on top (ViT-B: 86k
    positions, 129k edges, 4.3 -> 2.6 ms). Weak components of the directed graph are the
    components of the undirected one.
    """
    order = np.argsort(source, kind="stable")
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(source, minlength=count), out=indptr[1:])
    graph = csr_matrix((np.ones(len(source)), target[order], indptr), shape=(count, count))
    _, labels = connected_components(graph, directed=True, connection="weak")
    return labels.astype(np.int64)


def _groups(
    ctx: AnalysisContext,
    classes: _Classes,
    channel_group: np.ndarray,
    channel_rank: np.ndarray,
    group_sizes: np.ndarray,
) -> list[PruningGroup]:
    """The groups with their members: one per (axis, group) pair, sharing the class's arrays."""
    runs = [
        _class_runs(channel_group[channel], channel_rank[channel])
        for channel in np.split(classes.channel, classes.base[1:])
    ]
    num_groups = len(group_sizes)
    members: list[list[GroupMember]] = [[] for _ in range(num_groups)]
    frozen: list[list[str]] = [[] for _ in range(num_groups)]
    inexact: list[list[str]] = [[] for _ in range(num_groups)]
    for channel_axis, class_id in zip(ctx.axes, classes.of_axis.tolist(), strict=True):
        nodes = tuple(sorted(channel_axis.nodes))
        for group_id, positions, ranks in runs[class_id]:
            members[group_id].append(
                GroupMember(
                    channel_axis.value_name,
                    channel_axis.axis,
                    channel_axis.size,
                    channel_axis.is_parameter,
                    positions,
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
    return [
        PruningGroup(group_id, int(group_sizes[group_id]), members[group_id], frozen[group_id],
                     inexact[group_id])
        for group_id in range(num_groups)
    ]  # fmt: skip


def _class_runs(
    local_groups: np.ndarray, local_ranks: np.ndarray
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(group, positions in it, their channel ranks) for one class's positions.

    Most classes lie in a single group (whole-axis members); only Concat outputs, flattened and
    fused axes are split, and only they are sorted. The arrays are shared by every axis of the
    class, so they are read-only.
    """
    if not len(local_groups):
        return []
    if local_groups.min() == local_groups.max():
        result = [(int(local_groups[0]), np.arange(len(local_groups), dtype=np.int64), local_ranks)]
    else:
        order = np.argsort(local_groups, kind="stable")
        cuts = np.flatnonzero(np.diff(local_groups[order])) + 1
        first_groups = local_groups[order][np.r_[0, cuts]].tolist()
        result = [
            (group_id, positions, local_ranks[positions])
            for group_id, positions in zip(first_groups, np.split(order, cuts), strict=True)
        ]
    for _, positions, ranks in result:
        positions.flags.writeable = ranks.flags.writeable = False
    return result
