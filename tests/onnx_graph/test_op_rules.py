"""The shared suite every registered op rule must pass: a tiny graph, pruned and checked exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnx_graph import PruningPlan, analyze, count_cost, prune, registered_op_types
from onnx_graph.testing import oracle_difference, run_onnx
from tests.onnx_graph.tiny_graphs import CASES, RuleCase, build_model, graph_text

CASE_BY_OP = {case.op_type: case for case in CASES}


@pytest.mark.parametrize("op_type", registered_op_types())
def test_every_registered_rule_has_a_tiny_graph(op_type: str) -> None:
    assert op_type in CASE_BY_OP, f"no tiny graph exercises the rule for {op_type}"


def _input(case: RuleCase) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.standard_normal((2, 4, case.spatial, case.spatial)).astype(np.float32)


@pytest.mark.parametrize("case", CASES, ids=[c.op_type for c in CASES])
def test_rule_prunes_exactly_or_freezes(case: RuleCase) -> None:
    model = build_model(graph_text(case))
    onnx.checker.check_model(onnx.parser.parse_model(graph_text(case)), full_check=True)
    groups = analyze(model)
    producer_groups = [g for g in groups if any(m.value_name == "p_w1" for m in g.members)]
    assert producer_groups
    if not case.prunable:
        assert not any(g.prunable for g in producer_groups)
        reasons = " ".join(r for g in producer_groups for r in g.frozen_reasons)
        assert case.op_type in reasons, reasons
        return
    prunable = [g for g in producer_groups if g.prunable]
    assert prunable, [g.why_not_prunable() for g in producer_groups]
    plan = PruningPlan(
        groups,
        {g.id: np.arange(0, g.num_channels, 2)[: max(1, g.num_channels // 2)] for g in prunable},
    )
    difference, scale = oracle_difference(model, plan, _input(case))
    assert difference <= 1e-4 * scale + 1e-6, (difference, scale)
    pruned = prune(model, plan)
    assert count_cost(pruned).params < count_cost(model).params
    dense_shape = run_onnx(model, _input(case))[0].shape
    assert run_onnx(pruned, _input(case))[0].shape == dense_shape
