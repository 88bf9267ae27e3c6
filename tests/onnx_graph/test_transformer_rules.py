"""The rules added for transformers, on tiny ONNX-text graphs checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnx_graph as og
from onnx_graph.rules.einsum import parse_equation
from onnx_graph.testing import oracle_difference, run_onnx


def _model(text: str, weights: dict[str, np.ndarray]) -> ir.Model:
    proto = onnx.parser.parse_model(text)
    for name, array in weights.items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    return ir.from_proto(proto)


def _random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


EINSUM_ATTENTION = """
<ir_version: 10, opset_import: ["" : 20]>
attention (float[2, 5, 8] x) => (float[2, 5, 8] y) {
    q = MatMul(x, wq)
    k = MatMul(x, wk)
    v = MatMul(x, wv)
    qh = Reshape(q, shape4)
    kh = Reshape(k, shape4)
    vh = Reshape(v, shape4)
    scores = Einsum<equation: string = "bihd,bjhd->bhij">(qh, kh)
    weights = Softmax<axis: int = -1>(scores)
    context = Einsum<equation: string = "bhij,bjhd->bihd">(weights, vh)
    merged = Reshape(context, shape3)
    y = MatMul(merged, wo)
}
"""


@pytest.mark.parametrize("attention, channels", [("heads", 2), ("head_dim", 4)])
def test_einsum_attention_heads_and_head_dims(attention: str, channels: int) -> None:
    weights = {name: _random(8, 8, seed=i) for i, name in enumerate(["wq", "wk", "wv", "wo"])}
    weights["shape4"] = np.array([2, 5, 2, 4], dtype=np.int64)
    weights["shape3"] = np.array([2, 5, 8], dtype=np.int64)
    model = _model(EINSUM_ATTENTION, weights)
    groups = og.analyze(model, attention=attention)
    units = sorted(g.num_channels for g in groups.prunable)
    assert units == ([2] if attention == "heads" else [4, 4])  # q/k dims and v dims apart
    plan = og.PruningPlan(groups, {g.id: np.array([1]) for g in groups.prunable})
    difference, scale = oracle_difference(model, plan, _random(2, 5, 8, seed=9))
    assert scale > 0.1 and difference < 1e-5


def test_einsum_equation_parsing() -> None:
    assert parse_equation("bhid,bhjd->bhij", [4, 4]) == (["bhid", "bhjd"], "bhij")
    assert parse_equation("...ij,...jk", [3, 3]) == (["Aij", "Ajk"], "Aik")
    assert parse_equation("ij,jk", [2, None]) is None


GATHER_ND_BIAS = """
<ir_version: 10, opset_import: ["" : 20]>
bias (float[2, 3, 4, 4] scores) => (float[2, 3, 4, 4] y) {
    h = MatMul(coords, w)
    table = GatherND(h, index)
    square = Reshape(table, shape)
    heads = Transpose<perm: ints = [2, 0, 1]>(square)
    y = Add(scores, heads)
}
"""


def test_gather_nd_carries_the_heads_axis_of_a_bias_table() -> None:
    weights = {
        "coords": _random(9, 5),
        "w": _random(5, 3, seed=1),
        "index": np.random.default_rng(2).integers(0, 9, (16, 1)).astype(np.int64),
        "shape": np.array([4, 4, 3], dtype=np.int64),
    }
    model = _model(GATHER_ND_BIAS, weights)
    groups = og.analyze(model)
    (group,) = [g for g in groups if g.matches("w")]
    assert group.num_channels == 3 and ("index", 0) not in {
        (m.value_name, m.axis) for m in group.members
    }
    # the scores input freezes the heads here (a graph input), but the coupling reached it
    assert any("graph input 'scores'" in r for r in group.why_not_prunable())


EXPAND_TOKEN = """
<ir_version: 10, opset_import: ["" : 20]>
token (float[N, 4, 6] x) => (float[N, 5, 3] y) {
    batch = Shape<start: int = 0, end: int = 1>(x)
    target = Concat<axis: int = 0>(batch, one, channels)
    tokens = Expand(class_token, target)
    features = MatMul(x, w)
    joined = Concat<axis: int = 1>(tokens, features)
    y = MatMul(joined, head)
}
"""


def test_expand_rewrites_a_channel_entry_of_its_target() -> None:
    weights = {
        "one": np.array([1], dtype=np.int64),
        "channels": np.array([8], dtype=np.int64),
        "class_token": _random(1, 1, 8),
        "w": _random(6, 8, seed=1),
        "head": _random(8, 3, seed=2),
    }
    model = _model(EXPAND_TOKEN, weights)
    groups = og.analyze(model)
    (group,) = groups.prunable
    assert {("class_token", 2), ("w", 1), ("head", 0)} <= {
        (m.value_name, m.axis) for m in group.members
    }
    plan = og.PruningPlan(groups, {group.id: np.array([0, 5, 6])})
    pruned = og.prune(model, plan)
    assert run_onnx(pruned, _random(3, 4, 6))[0].shape == (3, 5, 3)
    difference, scale = oracle_difference(model, plan, _random(3, 4, 6, seed=4))
    assert scale > 0.1 and difference < 1e-5


AS_STRIDED = """
<ir_version: 10, opset_import: ["" : 20]>
strided (float[N, 3, 4, 4] x) => (float[N, 2] y) {
    features = Conv(x, w)
    pooled = ReduceMean<keepdims: int = 1>(features, spatial)
    flat = Reshape(pooled, minus_one)
    size = Shape<start: int = 0, end: int = 1>(x)
    batch = Squeeze(size)
    rows = Range(zero, batch, step)
    offsets = Mul(rows, stride)
    row_index = Unsqueeze(offsets, axes)
    index = Add(row_index, channel_index)
    copied = Gather<axis: int = 0>(flat, index)
    vector = Reshape(copied, two_d)
    y = MatMul(vector, head)
}
"""


def test_identity_as_strided_gather_is_folded() -> None:
    weights = {
        "w": _random(6, 3, 1, 1),
        "spatial": np.array([2, 3], dtype=np.int64),
        "minus_one": np.array([-1], dtype=np.int64),
        "zero": np.array(0, dtype=np.int64),
        "step": np.array(1, dtype=np.int64),
        "stride": np.array(6, dtype=np.int64),
        "axes": np.array([1, 2, 3], dtype=np.int64),
        "channel_index": np.arange(6, dtype=np.int64).reshape(1, 6, 1, 1),
        "two_d": np.array([-1, 6], dtype=np.int64),
        "head": _random(6, 2, seed=1),
    }
    model = _model(AS_STRIDED, weights)
    images = _random(3, 3, 4, 4, seed=5)
    before = run_onnx(model, images)[0]
    groups = og.analyze(model)
    assert not any(n.op_type == "Gather" for n in model.graph)
    np.testing.assert_allclose(run_onnx(model, images)[0], before, rtol=1e-6)
    (group,) = groups.prunable
    plan = og.PruningPlan(groups, {group.id: np.array([2, 3])})
    difference, scale = oracle_difference(model, plan, images)
    assert scale > 0.01 and difference < 1e-5
