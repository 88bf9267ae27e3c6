"""Global ranking, MAC targets (exact MAC prediction without surgery), rounding and exclusion."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_graph import count_cost
from spa import (
    PruningPlan,
    allocate_for_macs,
    allocate_global,
    group_macs,
    macs_after,
    prune,
    score_groups,
)
from spa.pipeline import prune_model
from tests.spa.conftest import TinyCase


def test_macs_after_matches_the_pruned_graph(tiny_case: TinyCase) -> None:
    rng = np.random.default_rng(0)
    before = count_cost(tiny_case.model).macs
    for _ in range(3):
        plan = PruningPlan(tiny_case.groups)
        for group in tiny_case.groups.prunable:
            plan.removed[group.id] = rng.choice(
                group.num_channels, group.num_channels // 3, replace=False
            )
        predicted = macs_after(tiny_case.model, plan)
        assert predicted == count_cost(prune(tiny_case.model, plan)).macs
        assert predicted < before
    assert count_cost(tiny_case.model).macs == before  # shapes were restored


def test_group_macs_attribution_is_positive_for_every_prunable_group(tiny_case: TinyCase) -> None:
    ids = [g.id for g in tiny_case.groups.prunable]
    attribution = group_macs(tiny_case.model, tiny_case.groups, ids)
    assert all(attribution[i] > 0 for i in ids)
    assert sum(attribution.values()) <= 2 * count_cost(tiny_case.model).macs


@pytest.mark.parametrize("allocation", ["uniform", "global"])
@pytest.mark.parametrize("target", [0.7, 0.5])
def test_target_macs_is_met_closely(tiny_case: TinyCase, allocation: str, target: float) -> None:
    scores = score_groups(tiny_case.model, tiny_case.groups, "l2")
    plan = allocate_for_macs(
        tiny_case.model, tiny_case.groups, scores, target, allocation=allocation
    )
    fraction = macs_after(tiny_case.model, plan) / count_cost(tiny_case.model).macs
    assert target - 0.12 <= fraction <= target


def test_unreachable_target_is_a_clear_error(tiny_case: TinyCase) -> None:
    scores = score_groups(tiny_case.model, tiny_case.groups, "l1")
    with pytest.raises(ValueError, match="cannot reach"):
        allocate_for_macs(tiny_case.model, tiny_case.groups, scores, 0.001)


def test_global_ranking_takes_the_lowest_scores_across_groups(tiny_case: TinyCase) -> None:
    first, second = tiny_case.groups.prunable[:2]
    scores = {
        first.id: np.linspace(0.0, 0.1, first.num_channels),
        second.id: np.linspace(1.0, 2.0, second.num_channels),
    }
    budget = (first.num_channels + second.num_channels) // 4
    plan = allocate_global(tiny_case.groups, scores, 0.25, max_group_ratio=0.9)
    assert second.id not in plan.removed
    assert plan.removed[first.id].tolist() == list(range(budget))
    capped = allocate_global(tiny_case.groups, scores, 0.6, max_group_ratio=0.5)
    assert len(capped.removed[first.id]) == first.num_channels // 2


def test_round_to_and_exclude(tiny_case: TinyCase) -> None:
    result = prune_model(
        tiny_case.model, criterion="l1", target_macs=0.6, round_to=4, exclude=["*fc1*"]
    )
    for row in result.report["groups"]:
        assert row["kept"] % 4 == 0 or row["kept"] == row["channels"]
    assert not any(g.matches("*fc1*") for g in tiny_case.groups if g.id in result.plan.removed)
    assert result.report["totals"]["macs_kept"] <= 0.6


def test_plan_global_is_global_allocation_of_the_scores(tiny_case: TinyCase) -> None:
    from spa import plan_global, plan_uniform

    scores = score_groups(tiny_case.model, tiny_case.groups, "l2")
    expected = allocate_global(tiny_case.groups, scores, 0.4, 2)
    plan = plan_global(tiny_case.model, tiny_case.groups, 0.4, criterion="l2", round_to=2)
    assert {k: v.tolist() for k, v in plan.removed.items()} == {
        k: v.tolist() for k, v in expected.removed.items()
    }
    with pytest.raises(ValueError, match="unknown allocation"):
        plan_uniform(tiny_case.model, tiny_case.groups, 0.4, allocation="best")
