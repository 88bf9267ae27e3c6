"""Uniform allocation: channel counts with rounding, lowest-magnitude channels removed first."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_graph import analyze
from spa import channels_to_keep, plan_uniform
from spa.allocation import _lowest
from tests.onnx_graph.tiny_graphs import RuleCase, build_model, graph_text


@pytest.mark.parametrize(
    ("channels", "ratio", "round_to", "kept"),
    [
        (64, 0.5, 1, 32),
        (64, 0.3, 8, 48),
        (10, 0.5, 8, 8),
        (100, 0.99, 1, 1),
        (7, 0.0, 1, 7),
        (12, 0.5, 8, 8),
    ],
)
def test_channels_to_keep(channels: int, ratio: float, round_to: int, kept: int) -> None:
    assert channels_to_keep(channels, ratio, round_to) == kept


def test_channels_to_keep_rejects_bad_ratio() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        channels_to_keep(8, 1.0)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_magnitude_plan_removes_the_weakest_channels(criterion: str) -> None:
    model = build_model(graph_text(RuleCase("Relu", "t = Relu(h)")))
    weight = model.graph.initializers["p_w1"].const_value.numpy().copy()
    bias = model.graph.initializers["p_b1"].const_value.numpy().copy()
    consumer = model.graph.initializers["p_w2"].const_value.numpy().copy()
    for channel, scale in ((2, 1e-3), (5, 2e-3), (6, 3e-3)):
        weight[channel] *= scale
        bias[channel] *= scale
        consumer[:, channel] *= scale
    import onnx_ir as ir

    for name, array in (("p_w1", weight), ("p_b1", bias), ("p_w2", consumer)):
        model.graph.initializers[name].const_value = ir.Tensor(array, name=name)
    groups = analyze(model)
    plan = plan_uniform(model, groups, 0.375, criterion=criterion)
    ((group_id, removed),) = plan.removed.items()
    assert sorted(removed.tolist()) == [2, 5, 6]


def test_random_criterion_is_seeded_and_differs_from_magnitude() -> None:
    model = build_model(graph_text(RuleCase("Relu", "t = Relu(h)")))
    groups = analyze(model)
    first = plan_uniform(model, groups, 0.5, criterion="random")
    second = plan_uniform(model, groups, 0.5, criterion="random")
    assert all(np.array_equal(first.removed[k], second.removed[k]) for k in first.removed)


def test_lowest_scores_match_a_stable_sort_with_ties_and_nan() -> None:
    """Uniform allocation's selection (a partition) picks what a stable argsort would: on ties
    the first channels, NaN scores last."""
    rng = np.random.default_rng(7)
    for trial in range(500):
        size = int(rng.integers(1, 40))
        scores = rng.integers(0, 4, size).astype(np.float64)  # many ties
        if trial % 3 == 0:
            scores[rng.random(size) < 0.25] = np.nan
        count = int(rng.integers(0, size + 2))
        expected = np.sort(np.argsort(scores, kind="stable")[:count])
        np.testing.assert_array_equal(_lowest(scores, count), expected)
    np.testing.assert_array_equal(_lowest(np.array([2.0, 1.0, 1.0, 1.0, 0.5]), 3), [1, 2, 4])
