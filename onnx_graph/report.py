"""Human-readable and JSON reports of an analysis and of a pruning run."""

from __future__ import annotations

from collections import Counter
from typing import Any

from onnx_graph.cost import CostReport
from onnx_graph.groups import GroupSet, PruningGroup
from onnx_graph.plan import PruningPlan


def group_summary(group: PruningGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "channels": group.num_channels,
        "prunable": group.prunable,
        "why_not": group.why_not_prunable(),
        "parameters": [f"{m.value_name}[{m.axis}]" for m in group.parameters],
        "nodes": group.nodes,
    }


def groups_to_json(groups: GroupSet) -> dict[str, Any]:
    return {
        "num_groups": len(groups),
        "num_prunable": len(groups.prunable),
        "groups": [group_summary(g) for g in groups if g.parameters],
    }


def format_groups(groups: GroupSet) -> str:
    lines = [f"{len(groups.prunable)} prunable groups of {len(groups)}"]
    for group in groups:
        if not group.parameters:
            continue
        status = (
            "prunable" if group.prunable else "frozen: " + "; ".join(group.why_not_prunable()[:2])
        )
        lines.append(f"  {group.describe()}  [{status}]")
    return "\n".join(lines)


def _short_reason(reason: str) -> str:
    """Drop the value name in front so equal causes are counted together."""
    return reason.split("] ", 1)[-1]


def format_prune_report(
    before: CostReport, after: CostReport, groups: GroupSet, plan: PruningPlan, excluded: list[int]
) -> str:
    params_ratio, macs_ratio = after.ratio_to(before)
    pruned_groups = [g for g in plan.removed if len(plan.removed[g])]
    lines = [
        f"params: {before.params:,} -> {after.params:,} ({params_ratio:.1%})",
        f"MACs:   {before.macs:,} -> {after.macs:,} ({macs_ratio:.1%})",
        f"pruned {len(pruned_groups)} groups, removed {plan.num_removed} channels",
    ]
    left_alone = [g for g in groups if g.parameters and g.id not in pruned_groups]
    if left_alone:
        reasons: Counter[str] = Counter()
        for group in left_alone:
            why = ["excluded by --exclude"] if group.id in excluded else group.why_not_prunable()
            reasons.update(
                {_short_reason(why[0]) if why else "ratio too small to remove a channel"}
            )
        lines.append(f"left alone {len(left_alone)} groups:")
        lines.extend(f"  {count} x {reason}" for reason, count in reasons.most_common())
    return "\n".join(lines)


def prune_report_json(
    before: CostReport, after: CostReport, groups: GroupSet, plan: PruningPlan
) -> dict[str, Any]:
    return {
        "before": {"params": before.params, "macs": before.macs},
        "after": {"params": after.params, "macs": after.macs},
        "groups": [
            {
                **group_summary(g),
                "kept": g.num_channels - len(plan.removed.get(g.id, ())),
            }
            for g in groups
            if g.parameters
        ],
    }
