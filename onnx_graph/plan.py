"""Pruning plans: which channels of which groups to remove."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnx_graph.errors import PlanError
from onnx_graph.groups import GroupSet


@dataclass
class PruningPlan:
    """Channels to remove, per group (indices into the group's channel list)."""

    groups: GroupSet
    removed: dict[int, np.ndarray] = field(default_factory=dict)

    def removed_mask(self) -> np.ndarray:
        """Boolean mask over global channel ids; raises PlanError on an invalid plan."""
        mask = np.zeros(len(self.groups.channel_group), dtype=bool)
        for group_id, channels in self.removed.items():
            if not 0 <= group_id < len(self.groups):
                raise PlanError(
                    f"plan names group {group_id}, but there are {len(self.groups)} groups"
                )
            group = self.groups[group_id]
            channels = np.unique(np.asarray(channels, dtype=np.int64))
            if len(channels) == 0:
                continue
            reasons = group.why_not_prunable()
            if reasons:
                raise PlanError(f"group {group_id} cannot be pruned: {'; '.join(reasons)}")
            if channels.min() < 0 or channels.max() >= group.num_channels:
                raise PlanError(
                    f"group {group_id} has {group.num_channels} channels; plan removes {channels.max()}"
                )
            if len(channels) >= group.num_channels:
                raise PlanError(
                    f"plan removes all {group.num_channels} channels of group {group_id}"
                )
            mask[self.groups.global_channels(group_id, channels)] = True
        return mask

    @property
    def num_removed(self) -> int:
        return int(sum(len(np.unique(c)) for c in self.removed.values()))
