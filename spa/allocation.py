"""Turn importance scores into a pruning plan: how many channels each group keeps, and which."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnx_graph.groups import GroupSet, PruningGroup
from onnx_graph.plan import PruningPlan
from spa.importance import ImportanceCriterion, get_criterion

logger = logging.getLogger(__name__)


def channels_to_keep(num_channels: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept when removing ``ratio`` of ``num_channels``, rounded up to ``round_to``.

    Rounding up keeps hardware-friendly widths (multiples of 8 run near the MAC-proportional speed
    in onnxruntime); at least one rounding unit (or one channel) always stays.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    keep = max(1, num_channels - int(math.floor(num_channels * ratio)))
    if round_to > 1:
        keep = min(num_channels, max(round_to, int(math.ceil(keep / round_to)) * round_to))
    return keep


def eligible_groups(groups: GroupSet, exclude: Sequence[str] = ()) -> list[PruningGroup]:
    """Prunable groups not matching any ``exclude`` glob (node, value or parameter names)."""
    return [g for g in groups.prunable if not any(g.matches(p) for p in exclude)]


def plan_uniform(
    model: ir.Model,
    groups: GroupSet,
    ratio: float,
    *,
    criterion: str | ImportanceCriterion = "l1",
    round_to: int = 1,
    exclude: Sequence[str] = (),
) -> PruningPlan:
    """Remove the same fraction of channels from every eligible group, lowest scores first."""
    scorer = get_criterion(criterion) if isinstance(criterion, str) else criterion
    plan = PruningPlan(groups)
    for group in eligible_groups(groups, exclude):
        keep = channels_to_keep(group.num_channels, ratio, round_to)
        if keep >= group.num_channels:
            continue
        scores = np.asarray(scorer.score(model, group), dtype=np.float64)
        order = np.argsort(scores, kind="stable")
        plan.removed[group.id] = np.sort(order[: group.num_channels - keep])
    return plan
