"""Turn importance scores into a pruning plan: how many channels each group keeps, and which.

Allocations are registered by name (``ALLOCATIONS``): ``uniform`` removes the same fraction from
every group, ``global`` ranks all channels of all groups together (scores must be comparable
across groups, which every built-in criterion's contract asks for).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from onnx_graph.gc_pause import without_gc
from onnx_graph.groups import GroupSet, PruningGroup
from onnx_graph.plan import PruningPlan
from spa.importance import ImportanceCriterion, get_criterion

logger = logging.getLogger(__name__)

GroupScores = dict[int, np.ndarray]


def channels_to_keep(num_channels: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept when removing ``ratio`` of ``num_channels``, rounded up to ``round_to``.

    Rounding up keeps hardware-friendly widths (multiples of 8 run near the MAC-proportional speed
    in onnxruntime); at least one rounding unit (or one channel) always stays.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    keep = max(1, num_channels - int(math.floor(num_channels * ratio)))
    return round_kept(num_channels, keep, round_to)


def round_kept(num_channels: int, keep: int, round_to: int) -> int:
    """``keep`` rounded up to a multiple of ``round_to`` (never above ``num_channels``)."""
    if round_to > 1:
        keep = min(num_channels, max(round_to, int(math.ceil(keep / round_to)) * round_to))
    return max(1, keep)


def eligible_groups(groups: GroupSet, exclude: Sequence[str] = ()) -> list[PruningGroup]:
    """Prunable groups not matching any ``exclude`` glob (node, value or parameter names)."""
    return [g for g in groups.prunable if not any(g.matches(p) for p in exclude)]


def resolve_criterion(criterion: str | ImportanceCriterion) -> ImportanceCriterion:
    return get_criterion(criterion) if isinstance(criterion, str) else criterion


@without_gc
def score_groups(
    model: ir.Model,
    groups: GroupSet,
    criterion: str | ImportanceCriterion,
    exclude: Sequence[str] = (),
) -> GroupScores:
    """Scores of every eligible group's channels (the criterion is prepared once)."""
    scorer = resolve_criterion(criterion)
    scorer.prepare(model, groups)
    return {
        group.id: np.asarray(scorer.score(model, group), dtype=np.float64)
        for group in eligible_groups(groups, exclude)
    }


def _lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices (sorted) of the ``count`` lowest scores; among equal scores the first ones, as a
    stable sort would pick. A partition finds the threshold in linear time (a full sort per group
    was most of planning's own time on a ViT)."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if count >= len(scores):
        return np.arange(len(scores), dtype=np.int64)
    threshold = np.partition(scores, count - 1)[count - 1]
    if np.isnan(threshold):  # NaN scores sort last: keep the sort's exact order
        return np.sort(np.argsort(scores, kind="stable")[:count])
    below = np.flatnonzero(scores < threshold)
    ties = np.flatnonzero(scores == threshold)[: count - len(below)]
    return np.sort(np.concatenate([below, ties]))


def allocate_uniform(
    groups: GroupSet, scores: GroupScores, ratio: float, round_to: int = 1
) -> PruningPlan:
    """Remove ``ratio`` of every scored group's channels, lowest scores first."""
    plan = PruningPlan(groups)
    for group_id, group_scores in scores.items():
        total = groups[group_id].num_channels
        keep = channels_to_keep(total, ratio, round_to)
        if keep < total:
            plan.removed[group_id] = _lowest(group_scores, total - keep)
    return plan


def allocate_global(
    groups: GroupSet,
    scores: GroupScores,
    ratio: float,
    round_to: int = 1,
    max_group_ratio: float = 0.9,
) -> PruningPlan:
    """Remove the ``ratio`` of all scored channels with the lowest scores, across groups.

    No group loses more than ``max_group_ratio`` of its channels (a layer pruned away entirely
    disconnects the network); kept counts are rounded up to ``round_to``.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    plan = PruningPlan(groups)
    if not scores:
        return plan
    ids = np.concatenate([np.full(len(s), g) for g, s in scores.items()])
    values = np.concatenate(list(scores.values()))
    budget = int(math.floor(len(values) * ratio))
    chosen = np.argsort(values, kind="stable")[:budget]
    for group_id, group_scores in scores.items():
        total = groups[group_id].num_channels
        wanted = int(np.sum(ids[chosen] == group_id))
        floor_keep = max(1, int(math.ceil(total * (1.0 - max_group_ratio))))
        keep = round_kept(total, max(total - wanted, floor_keep), round_to)
        if keep < total:
            plan.removed[group_id] = _lowest(group_scores, total - keep)
    return plan


ALLOCATIONS: dict[str, Callable[..., PruningPlan]] = {
    "uniform": allocate_uniform,
    "global": allocate_global,
}


def plan_uniform(
    model: ir.Model,
    groups: GroupSet,
    ratio: float,
    *,
    criterion: str | ImportanceCriterion = "l1",
    round_to: int = 1,
    exclude: Sequence[str] = (),
    allocation: str = "uniform",
) -> PruningPlan:
    """Score the eligible groups and remove ``ratio`` of their channels, lowest scores first.

    ``allocation="uniform"`` (default) removes that fraction from every group; ``"global"`` ranks
    all channels together (``plan_global``).
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}; choose from {sorted(ALLOCATIONS)}")
    scores = score_groups(model, groups, criterion, exclude)
    return ALLOCATIONS[allocation](groups, scores, ratio, round_to)


def plan_global(model: ir.Model, groups: GroupSet, ratio: float, **options: object) -> PruningPlan:
    """Remove ``ratio`` of all eligible channels, ranked together across groups."""
    return plan_uniform(model, groups, ratio, allocation="global", **options)  # type: ignore[arg-type]
