"""MAC and parameter counts against hand-computed values."""

from __future__ import annotations

from onnx_graph import count_cost
from tests.onnx_graph.tiny_graphs import RuleCase, build_model, case_for, graph_text


def test_conv_and_gemm_macs_match_hand_count() -> None:
    case = case_for("Gemm")
    model = build_model(graph_text(case))
    from onnx_graph import prepare

    prepare(model)
    cost = count_cost(model)
    conv = 8 * 8 * 8 * (4 * 3 * 3)  # output elements x (C_in/g * kh * kw)
    assert cost.macs == conv + 16 * 8 + 5 * 16
    weights = 8 * 4 * 3 * 3 + 8 + 5 * 8 + 16 * 8 + 16 + 5 * 16
    assert cost.params == weights


def test_grouped_and_depthwise_conv_macs() -> None:
    case = RuleCase(
        "Conv", "t = Conv<group=8, pads=[1,1,1,1]>(h, p_dw)", extra_params="float[8,1,3,3] p_dw"
    )
    model = build_model(graph_text(case))
    cost = count_cost(model)
    per_node = sorted(cost.macs_per_node.values())
    assert 8 * 8 * 8 * 9 in per_node  # depthwise: one input channel per output
