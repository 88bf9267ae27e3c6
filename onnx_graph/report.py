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


def left_alone_groups(
    groups: GroupSet, pruned: set[int], excluded: set[int]
) -> list[dict[str, Any]]:
    """Groups with parameters that lost no channel, each with the reason (JSON-ready)."""
    rows = []
    for group in groups:
        if not group.parameters or group.id in pruned:
            continue
        if group.id in excluded:
            why = "excluded by --exclude"
        else:
            reasons = group.why_not_prunable()
            why = _short_reason(reasons[0]) if reasons else "ratio too small to remove a channel"
        rows.append(
            {
                "group": group.id,
                "channels": group.num_channels,
                "parameters": [m.value_name for m in group.parameters[:4]],
                "why": why,
            }
        )
    return rows


def format_left_alone(rows: list[dict[str, Any]]) -> list[str]:
    """Report lines counting the groups left alone by reason."""
    if not rows:
        return []
    reasons = Counter(row["why"] for row in rows)
    return [f"left alone {len(rows)} groups:"] + [
        f"  {count} x {reason}" for reason, count in reasons.most_common()
    ]


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
    lines.extend(format_left_alone(left_alone_groups(groups, set(pruned_groups), set(excluded))))
    return "\n".join(lines)
