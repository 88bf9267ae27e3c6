"""Analysis behaviour: frozen reasons name nodes, shared weights couple, exclusions, shuffles."""

from __future__ import annotations

import numpy as np

from onnx_graph import PlanError, PruningPlan, analyze, prune
from onnx_graph.testing import oracle_difference
from tests.onnx_graph.tiny_graphs import RuleCase, build_model, case_for, graph_text


def _groups_of(model, name):  # type: ignore[no-untyped-def]
    return [g for g in analyze(model) if any(m.value_name == name for m in g.members)]


def test_unknown_op_freezes_with_the_node_name() -> None:
    text = graph_text(RuleCase("Custom", "t = com.acme.Warp(h)"))
    text = text.replace('opset_import: ["" : 21]', 'opset_import: ["" : 21, "com.acme" : 1]')
    model = build_model(text)
    from onnx_graph.prepare import prepare

    prepare(model)
    t = next(n for n in model.graph if n.op_type == "Warp").outputs[0]
    t.shape, t.type = model.graph.initializers["p_w1"].shape, None
    groups = _groups_of(model, "p_w1")
    assert groups and not any(g.prunable for g in groups)
    reasons = " ".join(r for g in groups for r in g.frozen_reasons)
    assert "com.acme::Warp" in reasons and "node" in reasons


def test_graph_output_channels_are_frozen() -> None:
    text = graph_text(
        RuleCase("Out", "t = Relu(h)", tail="y = Identity(t)", output="float[N,8,8,8] y")
    )
    groups = _groups_of(build_model(text), "p_w1")
    assert not groups[0].prunable
    assert any("graph output" in r for r in groups[0].frozen_reasons)


def test_channel_shuffle_prunes_whole_rectangles() -> None:
    case = case_for("Reshape")  # a g=2 channel shuffle: Reshape, Transpose, Reshape
    model = build_model(graph_text(case))
    group = next(g for g in analyze(model) if g.prunable)
    assert group.num_channels == 4  # the g=2 shuffle pairs channels c and c+4
    member = next(m for m in group.members if m.value_name == "p_w1")
    assert list(member.channel_index) == [0, 1, 2, 3, 0, 1, 2, 3]
    plan = PruningPlan(analyze(model), {group.id: np.array([1, 2])})
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    difference, scale = oracle_difference(model, plan, x)
    assert difference <= 1e-4 * scale
    pruned = prune(model, plan)
    targets = [
        n.inputs[1].const_value.numpy().tolist() for n in pruned.graph if n.op_type == "Reshape"
    ]
    assert [0, 2, 2, 8, 8] in targets and [0, 4, 8, 8] in targets


def test_depthwise_multiplier_couples_input_with_its_outputs() -> None:
    case = RuleCase(
        "Conv",
        "t = Conv<group=8, pads=[1,1,1,1]>(h, p_dw)",
        extra_params="float[16,1,3,3] p_dw",
        consumer_channels=16,
    )
    model = build_model(graph_text(case))
    group = next(g for g in analyze(model) if any(m.value_name == "p_w1" for m in g.members))
    dw = next(m for m in group.members if m.value_name == "p_dw")
    assert list(dw.channel_index) == [c // 2 for c in range(16)]
    groups = analyze(model)
    plan = PruningPlan(groups, {group.id: np.array([0, 5, 6])})
    pruned = prune(model, plan)
    conv = [n for n in pruned.graph if n.op_type == "Conv"][1]
    assert conv.attributes["group"].value == 5
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    difference, scale = oracle_difference(model, plan, x)
    assert difference <= 1e-4 * scale


def test_plan_errors_name_the_group() -> None:
    text = graph_text(RuleCase("Relu", "t = Relu(h)"))
    model = build_model(text)
    groups = analyze(model)
    group = next(g for g in groups if g.prunable)
    frozen = next(g for g in groups if not g.prunable)
    for removed, message in (
        ({group.id: np.arange(group.num_channels)}, "all 8 channels"),
        ({frozen.id: np.array([0])}, f"group {frozen.id} cannot be pruned"),
        ({999: np.array([0])}, "group 999"),
        ({group.id: np.array([8])}, "has 8 channels"),
    ):
        try:
            prune(model, PruningPlan(groups, removed))
        except PlanError as error:
            assert message in str(error)
        else:
            raise AssertionError(f"no PlanError for {removed}")


def test_prune_leaves_the_input_model_untouched() -> None:
    model = build_model(graph_text(RuleCase("Relu", "t = Relu(h)")))
    groups = analyze(model)
    before = model.graph.initializers["p_w1"].const_value.numpy().copy()
    group = next(g for g in groups if g.prunable)
    prune(model, PruningPlan(groups, {group.id: np.array([0, 3])}))
    np.testing.assert_array_equal(model.graph.initializers["p_w1"].const_value.numpy(), before)
    assert model.graph.initializers["p_w1"].shape[0] == 8


def test_concat_with_a_piece_of_unknown_size_freezes_its_live_inputs() -> None:
    # The legacy exporter computes shuffle/chunk sizes at run time, so a Concat piece can have a
    # symbolic channel count; the offsets are then unknown and no input may be pruned.
    text = graph_text(RuleCase("Concat", "t = Concat<axis=1>(z, h)", consumer_channels=8))
    text = text.replace("(float[N,4,8,8] x,", "(float[N,4,8,8] x, float[N,C,8,8] z,")
    text = (
        text.replace("float[5,8,1,1] p_w2", "float[5,8,1,1] p_w2")
        .replace("y = Conv(t, p_w2)", "y = ReduceMean<keepdims=1>(t)")
        .replace("float[N,5,8,8] y", "float[N,1,8,8] y")
    )
    model = build_model(text)
    groups = _groups_of(model, "p_w1")
    assert groups and not any(g.prunable for g in groups)
    assert any("unknown size" in r for g in groups for r in g.frozen_reasons)
