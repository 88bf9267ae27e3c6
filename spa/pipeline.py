"""One call from a model to a pruned model: analyse, score, allocate, compensate, cut, report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis import analyze
from onnx_graph.cost import count_cost
from onnx_graph.groups import GroupSet
from onnx_graph.plan import PruningPlan
from onnx_graph.report import left_alone_groups
from onnx_graph.surgery import prune
from spa.allocation import ALLOCATIONS, GroupScores, resolve_criterion, score_groups
from spa.cost_target import allocate_for_macs
from spa.importance import ImportanceCriterion


@dataclass
class PruneResult:
    """The pruned model with everything that explains it."""

    pruned: ir.Model
    plan: PruningPlan
    groups: GroupSet
    scores: GroupScores
    compensated: ir.Model  # the dense model after compensation (== model for most criteria)
    report: dict[str, Any] = field(default_factory=dict)


def _summary(values: np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }


def build_report(
    model: ir.Model, result_model: ir.Model, plan: PruningPlan, scores: GroupScores
) -> dict[str, Any]:
    """JSON-ready report: per group channels kept and score summary; totals params and MACs."""
    before, after = count_cost(model), count_cost(result_model)
    rows = []
    for group_id, group_scores in sorted(scores.items()):
        group = plan.groups[group_id]
        removed = np.asarray(plan.removed.get(group_id, []), dtype=np.int64)
        kept_mask = np.ones(group.num_channels, dtype=bool)
        kept_mask[removed] = False
        rows.append(
            {
                "group": group_id,
                "parameters": [m.value_name for m in group.parameters[:4]],
                "channels": group.num_channels,
                "kept": int(kept_mask.sum()),
                "score_kept": _summary(group_scores[kept_mask]),
                "score_removed": _summary(group_scores[~kept_mask]),
            }
        )
    pruned = {g for g, removed in plan.removed.items() if len(removed)}
    excluded = {g.id for g in plan.groups.prunable if g.id not in scores}
    return {
        "groups": rows,
        "left_alone": left_alone_groups(plan.groups, pruned, excluded),
        "totals": {
            "params_before": before.params,
            "params_after": after.params,
            "macs_before": before.macs,
            "macs_after": after.macs,
            "macs_kept": after.macs / max(before.macs, 1),
            "params_kept": after.params / max(before.params, 1),
        },
    }


def prune_model(
    model: ir.Model,
    *,
    criterion: str | ImportanceCriterion = "l1",
    ratio: float | None = None,
    target_macs: float | None = None,
    allocation: str = "uniform",
    round_to: int = 1,
    exclude: Sequence[str] = (),
    groups: GroupSet | None = None,
    validate: bool = True,
) -> PruneResult:
    """Prune ``model`` to a channel ``ratio`` or a MAC fraction ``target_macs`` (exactly one).

    The criterion scores every eligible group; the allocation picks the channels; the criterion's
    ``compensate`` repairs the surviving weights (OBSPA); surgery removes the channels.
    """
    if (ratio is None) == (target_macs is None):
        raise ValueError("give exactly one of ratio= and target_macs=")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}; choose from {sorted(ALLOCATIONS)}")
    groups = groups if groups is not None else analyze(model)
    scorer = resolve_criterion(criterion)
    scores = score_groups(model, groups, scorer, exclude)
    if target_macs is not None:
        plan = allocate_for_macs(
            model, groups, scores, target_macs, allocation=allocation, round_to=round_to
        )
    else:
        assert ratio is not None
        plan = ALLOCATIONS[allocation](groups, scores, ratio, round_to)
    compensated = scorer.compensate(model, plan)
    pruned = prune(compensated, plan, validate=validate)
    result = PruneResult(pruned, plan, groups, scores, compensated)
    result.report = build_report(model, pruned, plan, scores)
    result.report["criterion"] = scorer.name
    result.report["allocation"] = allocation
    return result
