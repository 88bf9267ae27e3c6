"""Every registered criterion: scores of the right length, deterministic, usable in a valid plan
whose pruned graph equals its zeroed (and, for OBSPA, compensated) dense graph."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_graph.testing import run_onnx
from spa import get_criterion, registered_criteria, zero_out
from spa.pipeline import prune_model
from tests.spa.conftest import TinyCase, criterion_options


def test_the_built_in_criteria_are_registered() -> None:
    assert {"l1", "l2", "random", "bn_scale", "taylor", "obspa"} <= set(registered_criteria())


@pytest.mark.parametrize("name", registered_criteria())
def test_scores_cover_every_channel_and_repeat(name: str, tiny_case: TinyCase) -> None:
    first = get_criterion(name, **criterion_options(name, tiny_case))
    second = get_criterion(name, **criterion_options(name, tiny_case))
    first.prepare(tiny_case.model, tiny_case.groups)
    second.prepare(tiny_case.model, tiny_case.groups)
    assert len(tiny_case.groups.prunable) >= 4
    for group in tiny_case.groups.prunable:
        scores = np.asarray(first.score(tiny_case.model, group))
        assert scores.shape == (group.num_channels,)
        assert np.all(np.isfinite(scores)) and np.all(scores >= 0)
        np.testing.assert_allclose(scores, second.score(tiny_case.model, group))


@pytest.mark.parametrize("name", registered_criteria())
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_pruned_model_equals_its_dense_equivalent(
    name: str, allocation: str, tiny_case: TinyCase
) -> None:
    criterion = get_criterion(name, **criterion_options(name, tiny_case))
    result = prune_model(
        tiny_case.model,
        criterion=criterion,
        ratio=0.5,
        allocation=allocation,
        groups=tiny_case.groups,
    )
    assert result.plan.num_removed > 0
    pruned = run_onnx(result.pruned, tiny_case.x)[0]
    dense = run_onnx(zero_out(result.compensated, result.plan), tiny_case.x)[0]
    assert pruned.shape == (len(tiny_case.x), 5)
    np.testing.assert_allclose(pruned, dense, atol=1e-4 * max(1.0, float(np.abs(dense).max())))
    totals = result.report["totals"]
    assert (
        totals["macs_after"] < totals["macs_before"]
        and totals["params_after"] < totals["params_before"]
    )


@pytest.mark.parametrize("name", registered_criteria())
def test_criteria_run_on_folded_batchnorm_graphs(name: str, folded_case: TinyCase) -> None:
    assert not any(n.op_type == "BatchNormalization" for n in folded_case.model.graph)
    criterion = get_criterion(name, **criterion_options(name, folded_case))
    result = prune_model(
        folded_case.model, criterion=criterion, target_macs=0.6, groups=folded_case.groups
    )
    assert result.report["totals"]["macs_kept"] <= 0.6
    pruned = run_onnx(result.pruned, folded_case.x)[0]
    dense = run_onnx(zero_out(result.compensated, result.plan), folded_case.x)[0]
    np.testing.assert_allclose(pruned, dense, atol=1e-4 * max(1.0, float(np.abs(dense).max())))
