"""Pruning groups: sets of coupled channels that must be removed together, and their members."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np

from onnx_graph.analysis_context import ChannelAxis


@dataclass
class GroupMember:
    """One channel axis touched by a group, with the group's positions on it.

    ``positions[i]`` of the axis belongs to the group's channel ``channel_index[i]``; a Flatten
    output has several positions per channel, a Concat output holds positions of several groups.
    """

    value_name: str
    axis: int
    axis_size: int
    is_parameter: bool
    positions: np.ndarray
    channel_index: np.ndarray
    nodes: tuple[str, ...]


@dataclass
class PruningGroup:
    """Channels coupled across the graph: removing channel k removes it from every member."""

    id: int
    num_channels: int
    members: list[GroupMember]
    frozen_reasons: list[str] = field(default_factory=list)
    inexact_reasons: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Whether pruning this group gives exactly the zeroed dense model's outputs."""
        return not self.inexact_reasons

    @property
    def parameters(self) -> list[GroupMember]:
        """Members that are initializers (weights, biases, norm statistics)."""
        return [m for m in self.members if m.is_parameter]

    @property
    def prunable(self) -> bool:
        return not self.why_not_prunable()

    def why_not_prunable(self) -> list[str]:
        """Reasons this group cannot be pruned (empty when it can)."""
        reasons = list(self.frozen_reasons)
        if not self.parameters:
            reasons.append("has no parameters to slice")
        if self.num_channels < 2:
            reasons.append("has a single channel")
        return reasons

    @property
    def nodes(self) -> list[str]:
        return sorted({node for member in self.members for node in member.nodes})

    def matches(self, pattern: str) -> bool:
        """Whether any member value or node name matches the glob ``pattern``."""
        names = [m.value_name for m in self.members] + self.nodes
        return any(fnmatch.fnmatchcase(name, pattern) for name in names)

    def describe(self) -> str:
        params = ", ".join(f"{m.value_name}[{m.axis}]" for m in self.parameters[:4])
        more = len(self.parameters) - 4
        suffix = f" (+{more} more)" if more > 0 else ""
        return f"group {self.id}: {self.num_channels} channels; {params}{suffix}"


@dataclass
class GroupSet:
    """Result of the analysis: every channel axis, its positions' channels, and the groups."""

    axes: list[ChannelAxis]
    position_channel: np.ndarray  # global position -> global channel id
    channel_group: np.ndarray  # global channel id -> group id
    channel_rank: np.ndarray  # global channel id -> index of the channel inside its group
    groups: list[PruningGroup]
    # Identity classes (``onnx_graph.channel_groups``): axes whose positions are the same slots.
    # Optional; with them, kept positions are computed once per class instead of once per axis.
    axis_class: np.ndarray | None = None  # axis index -> class
    class_channel: np.ndarray | None = None  # compact position (classes in order) -> channel id
    class_size: np.ndarray | None = None  # class -> positions per axis
    _channels_by_group: list[np.ndarray] | None = field(default=None, init=False, repr=False)

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, group_id: int) -> PruningGroup:
        return self.groups[group_id]

    @property
    def prunable(self) -> list[PruningGroup]:
        return [g for g in self.groups if g.prunable]

    def kept_positions(self, removed_channels: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
        """For each channel axis that loses positions: the positions that stay (sorted).

        Computed once per identity class; the axes of a class share one read-only array.

        Args:
            removed_channels: Boolean mask over global channel ids.
        """
        axis_class, class_channel, class_size = self._class_layout()
        removed = removed_channels[class_channel]
        starts = np.concatenate([[0], np.cumsum(class_size)[:-1]]).astype(np.int64)
        kept_by_class: dict[int, np.ndarray] = {}
        if len(removed) and removed.any():
            for class_id in np.flatnonzero(np.logical_or.reduceat(removed, starts)).tolist():
                start = int(starts[class_id])
                kept = np.flatnonzero(~removed[start : start + int(class_size[class_id])])
                kept.flags.writeable = False  # shared by every axis of the class
                kept_by_class[class_id] = kept
        return {
            (channel_axis.value_name, channel_axis.axis): kept_by_class[class_id]
            for channel_axis, class_id in zip(self.axes, axis_class.tolist(), strict=True)
            if class_id in kept_by_class
        }

    def _class_layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(axis -> class, compact position -> channel, class -> size); without identity classes
        every axis is a class of its own and its positions are the compact ones."""
        if self.axis_class is not None and self.class_channel is not None:
            assert self.class_size is not None
            return self.axis_class, self.class_channel, self.class_size
        sizes = np.fromiter((a.size for a in self.axes), dtype=np.int64, count=len(self.axes))
        return np.arange(len(self.axes), dtype=np.int64), self.position_channel, sizes

    def global_channels(self, group_id: int, channels: np.ndarray) -> np.ndarray:
        """Global channel ids of a group's channels given by their in-group index."""
        if self._channels_by_group is None:
            # One sort for all groups: channel ids ordered by (group, rank in group).
            order = np.lexsort((self.channel_rank, self.channel_group))
            starts = np.searchsorted(self.channel_group[order], np.arange(len(self.groups) + 1))
            self._channels_by_group = [
                order[starts[g] : starts[g + 1]] for g in range(len(self.groups))
            ]
        return self._channels_by_group[group_id][np.asarray(channels, dtype=np.int64)]
