"""Dynamic-batch graphs: computed Reshape targets and concrete shapes, without cloning or running."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import pytest
import torch

import onnx_graph as og
import onnx_graph.shape_targets as shape_targets
from onnx_graph.prepare import prepare
from onnx_graph.static_shapes import inferred_shapes
from onnx_graph.testing import oracle_difference, randomize_module
from spa.allocation import plan_uniform
from tests.onnx_graph.test_transformers import tiny_vit

# Inference has no data propagation through Div: this target needs onnxruntime.
_DIV_TARGET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8] x) => (float[N, 4, 2] y) {
  s = Shape(x)
  i0 = Constant<value = int64[1] {0}>()
  b = Gather<axis = 0>(s, i0)
  eight = Constant<value = int64[1] {8}>()
  two = Constant<value = int64[1] {2}>()
  four = Div(eight, two)
  t = Concat<axis = 0>(b, four, two)
  y = Reshape(x, t)
}
"""


@pytest.fixture(scope="module")
def dynamic_vit() -> ir.Model:
    module = randomize_module(tiny_vit(), seed=3)
    return og.lower(module, (torch.randn(2, 3, 32, 32),), dynamic_batch=True)


def _shapes(model: ir.Model) -> dict[str, str]:
    return {v.name: str(v.shape) for n in model.graph for v in n.outputs if v.name}


def test_dynamo_vit_targets_are_resolved_by_inference_alone(
    dynamic_vit: ir.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = dynamic_vit.clone()
    prepare(model)
    before = len(shape_targets.computed_reshapes(model))

    def no_onnxruntime(*args: object, **kwargs: object) -> None:
        raise AssertionError("onnxruntime evaluation should not be needed")

    monkeypatch.setattr(shape_targets, "_evaluate", no_onnxruntime)
    result = shape_targets.constant_reshape_targets(model)
    assert before > 0
    assert result.evaluated == 0
    assert result.replaced == before
    assert shape_targets.computed_reshapes(model) == []
    constants = [n.inputs[1].const_value.numpy() for n in model.graph if n.op_type == "Reshape"]
    # Every target keeps exactly one run-time entry (-1, the batch) or none.
    assert all(int((c == -1).sum()) <= 1 for c in constants)


def test_target_that_inference_cannot_resolve_is_evaluated() -> None:
    model = ir.from_proto(onnx.parser.parse_model(_DIV_TARGET))
    prepare(model)
    result = shape_targets.constant_reshape_targets(model)
    assert result == shape_targets.ReshapeTargets(replaced=1, evaluated=1)
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    np.testing.assert_array_equal(reshape.inputs[1].const_value.numpy(), [-1, 4, 2])


def test_skeleton_inference_sees_weight_shapes_without_weight_data(dynamic_vit: ir.Model) -> None:
    model = dynamic_vit.clone()
    prepare(model)
    shapes = inferred_shapes(model, (1, 3))
    output = model.graph.outputs[0].name
    assert shapes[1] is not None and shapes[3] is not None
    assert shapes[1][output] == [1, 1000]
    assert shapes[3][output] == [3, 1000]
    # The model's weights are untouched by building the skeleton.
    weights = [v for v in model.graph.initializers.values() if v.const_value.size > 64]
    assert weights and all(v.const_value is not None for v in weights)


def test_analysis_restores_symbolic_shapes_and_prunes_exactly(dynamic_vit: ir.Model) -> None:
    model = dynamic_vit.clone()
    prepare(model)
    shape_targets.constant_reshape_targets(model)
    before = _shapes(model)
    groups = og.analyze(model, attention="heads")
    assert _shapes(model) == before
    assert not isinstance(model.graph.inputs[0].shape[0], int)  # batch is still symbolic
    plan = plan_uniform(model, groups, 0.5, criterion="l1")
    images = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    difference, scale = oracle_difference(model, plan, images)
    assert difference <= 1e-4 * max(scale, 1.0)


def test_prune_in_place_equals_prune_of_a_copy(dynamic_vit: ir.Model) -> None:
    model = dynamic_vit.clone()
    groups = og.analyze(model)
    plan = plan_uniform(model, groups, 0.5, criterion="l1")
    copied = og.prune(model, plan)
    assert copied is not model
    in_place = og.prune(model, plan, copy=False)
    assert in_place is model
    images = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    from onnx_graph.testing import run_onnx

    np.testing.assert_allclose(run_onnx(in_place, images)[0], run_onnx(copied, images)[0])
    sizes = {n: v.const_value.size for n, v in copied.graph.initializers.items()}
    assert {n: v.const_value.size for n, v in in_place.graph.initializers.items()} == sizes


_SHAPE_TARGET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch, 6, 4] x) => (float[batch, 3, 8] y) {
  s = Shape(x)
  zero = Constant<value = int64[1] {0}>()
  one = Constant<value = int64[1] {1}>()
  b = Slice(s, zero, one)
  three = Constant<value = int64[1] {3}>()
  eight = Constant<value = int64[1] {8}>()
  t = Concat<axis = 0>(b, three, eight)
  y = Reshape(x, t)
}
"""


def test_symbolic_entries_read_shape_subgraphs() -> None:
    from onnx_graph.shape_subgraph import as_constant, symbolic_entries

    model = ir.from_proto(onnx.parser.parse_model(_SHAPE_TARGET))
    prepare(model)  # Constant nodes become initializers
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    entries = symbolic_entries(reshape.inputs[1])
    assert entries == ["batch", 3, 8]
    np.testing.assert_array_equal(as_constant(entries, {"batch"}), [-1, 3, 8])
    assert as_constant(["batch", "batch", 8], {"batch"}) is None  # two batch entries
    assert as_constant(["seq", 3], {"batch"}) is None  # another symbol
    assert as_constant(["batch", -1], {"batch"}) is None  # would need two -1


def test_structural_targets_need_no_inference_and_leave_no_shape_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ir.from_proto(onnx.parser.parse_model(_SHAPE_TARGET))
    prepare(model)

    def no_inference(*args: object, **kwargs: object) -> None:
        raise AssertionError("shape inference should not be needed")

    monkeypatch.setattr(shape_targets, "inferred_shapes", no_inference)
    result = shape_targets.constant_reshape_targets(model)
    assert result == shape_targets.ReshapeTargets(replaced=1, evaluated=0)
    # The Shape/Slice/Concat cone is gone: nothing reads the channel axis at run time any more.
    assert [n.op_type for n in model.graph] == ["Reshape"]
    x = np.random.default_rng(0).standard_normal((5, 6, 4)).astype(np.float32)
    from onnx_graph.testing import run_onnx

    np.testing.assert_array_equal(run_onnx(model, x)[0], x.reshape(5, 3, 8))


_EXPAND_TO_BATCH = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch, 4] x, float[1, 4] token) => (float[batch, 4] y) <float[batch, 4] e> {
  s = Shape(x)
  zero = Constant<value = int64[1] {0}>()
  one = Constant<value = int64[1] {1}>()
  b = Slice(s, zero, one)
  four = Constant<value = int64[1] {4}>()
  t = Concat<axis = 0>(b, four)
  e = Expand(token, t)
  y = Add(x, e)
}
"""


def test_plain_inference_is_completed_by_the_graphs_batch_shapes() -> None:
    from onnx_graph.static_shapes import SkeletonInference, completed_shapes

    model = ir.from_proto(onnx.parser.parse_model(_EXPAND_TO_BATCH))
    prepare(model)
    inference = SkeletonInference(model)
    plain = inference.at(1, data_propagation=False)
    assert plain is not None and plain["e"] == [None, 4]  # Expand to Shape(x)[0]: unknown
    assert inference.at(1)["e"] == [1, 4]  # data propagation resolves it, at a price
    completed = completed_shapes(model, plain)
    assert completed is not None and completed["e"] == [1, 4] and completed["y"] == [1, 4]
    # Read off the graph alone (no inference): every symbolic dim is the input batch.
    assert completed_shapes(model, {}, batch=3)["e"] == [3, 4]
