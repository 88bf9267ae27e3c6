"""Plans for a cost target: keep a given fraction of the MACs instead of a channel ratio.

MACs after a plan are counted exactly without surgery: the kept sizes are written into the value
shapes for the count (``onnx_graph.count_cost``) and restored afterwards. A bisection over the
removal ratio then finds the lightest pruning that meets the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnx_graph.cost import count_cost
from onnx_graph.groups import GroupSet
from onnx_graph.plan import PruningPlan
from spa.allocation import ALLOCATIONS, GroupScores


def _values(graph: ir.Graph) -> dict[str, ir.Value]:
    values: dict[str, ir.Value] = {v.name: v for v in graph.inputs if v.name}
    values.update({name: v for name, v in graph.initializers.items()})
    values.update({v.name: v for node in graph for v in node.outputs if v.name})
    return values


def macs_after(model: ir.Model, plan: PruningPlan) -> int:
    """MACs (per sample) the model would have once ``plan`` is applied."""
    kept = plan.groups.kept_positions(plan.removed_mask())
    values = _values(model.graph)
    saved: dict[str, ir.Shape | None] = {}
    try:
        for (name, axis), positions in kept.items():
            value = values[name]
            if value.shape is None:
                continue
            saved.setdefault(name, value.shape)
            dims = list(value.shape)
            dims[axis] = len(positions)
            value.shape = ir.Shape(dims)
        return count_cost(model).macs
    finally:
        for name, shape in saved.items():
            values[name].shape = shape


def group_macs(model: ir.Model, groups: GroupSet, group_ids: Sequence[int]) -> dict[int, int]:
    """MACs attributed to each group: the MACs saved by removing half of it, doubled."""
    base = count_cost(model).macs
    attribution = {}
    for group_id in group_ids:
        half = np.arange(groups[group_id].num_channels // 2)
        plan = PruningPlan(groups, {group_id: half}) if len(half) else PruningPlan(groups)
        attribution[group_id] = 2 * (base - macs_after(model, plan))
    return attribution


def allocate_for_macs(
    model: ir.Model,
    groups: GroupSet,
    scores: GroupScores,
    target_macs: float,
    *,
    allocation: str = "uniform",
    round_to: int = 1,
    tolerance: float = 0.002,
) -> PruningPlan:
    """The plan keeping at most ``target_macs`` (a fraction) of the MACs, pruning as little as it can.

    Raises:
        ValueError: when the target is out of (0, 1] or unreachable with the eligible groups.
    """
    if not 0.0 < target_macs <= 1.0:
        raise ValueError(f"target_macs must be in (0, 1], got {target_macs}")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}; choose from {sorted(ALLOCATIONS)}")
    allocate = ALLOCATIONS[allocation]
    base = count_cost(model).macs

    def plan_at(ratio: float) -> tuple[PruningPlan, float]:
        plan = allocate(groups, scores, ratio, round_to)
        return plan, macs_after(model, plan) / max(base, 1)

    low, high = 0.0, 0.98
    best, fraction = plan_at(high)
    if fraction > target_macs + 1e-9:
        raise ValueError(
            f"cannot reach {target_macs:.0%} of the MACs: pruning every eligible group to the limit "
            f"keeps {fraction:.1%}"
        )
    if target_macs >= 1.0:
        return PruningPlan(groups)
    while high - low > tolerance:
        middle = (low + high) / 2
        plan, fraction = plan_at(middle)
        if fraction <= target_macs:
            best, high = plan, middle
        else:
            low = middle
    return best
