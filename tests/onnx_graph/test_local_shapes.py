"""Shapes at a fixed batch read off the graph: dim expressions, and inference of just the nodes
whose shapes the graph does not say."""

from __future__ import annotations

import onnx
import onnx.parser
import onnx_ir as ir
import pytest
import torch

import onnx_graph as og
from onnx_graph.local_shapes import evaluated_dim, local_shapes
from onnx_graph.prepare import _needed_passes, prepare
from onnx_graph.shape_targets import constant_reshape_targets
from onnx_graph.static_shapes import SkeletonInference, completed_shapes
from onnx_graph.testing import randomize_module
from tests.onnx_graph.test_shape_resolution import _EXPAND_TO_BATCH
from tests.onnx_graph.test_transformers import tiny_vit


@pytest.mark.parametrize(
    ("text", "batch", "expected"),
    [
        ("batch", 3, 3),
        ("12*batch", 1, 12),
        ("12*batch", 2, 24),
        ("batch*197 + 1", 2, 395),
        ("(batch - 1)//2", 5, 2),
        ("-batch + 7", 2, 5),
        ("batch % 4", 6, 2),
        ("seq", 1, None),  # another symbol
        ("floor(batch/2)", 4, None),  # a call and true division are not read
        ("batch/2", 4, None),
        ("batch//0", 4, None),
        ("2**batch", 3, None),
        ("batch +", 1, None),  # not an expression
    ],
)
def test_dim_expressions_evaluate_at_the_batch(text: str, batch: int, expected: int | None) -> None:
    assert evaluated_dim(ir.SymbolicDim(text), {"batch"}, batch) == expected
    assert evaluated_dim(7, {"batch"}, batch) == 7


def _skeleton_reference(model: ir.Model, batch: int) -> dict[str, list[int | None]]:
    inference = SkeletonInference(model)
    plain = inference.at(batch, data_propagation=False)
    found = completed_shapes(model, plain, batch) if plain is not None else None
    return found if found is not None else inference.at(batch)


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_vit_shapes_equal_whole_model_inference(batch: int) -> None:
    module = randomize_module(tiny_vit(), seed=1)
    model = og.lower(module, (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    prepare(model)
    constant_reshape_targets(model)
    unknown = [v for n in model.graph for v in n.outputs if v.shape is None or None in v.shape]
    expressions = [
        v
        for n in model.graph
        for v in n.outputs
        if v.shape is not None
        and any(not isinstance(d, int) and str(d) != "batch" for d in v.shape)
    ]
    assert unknown or expressions  # the export really leaves work for local_shapes
    found = local_shapes(model, batch)
    assert found is not None
    reference = _skeleton_reference(model, batch)
    assert {k: found[k] for k in reference if k in found} == {
        k: v for k, v in reference.items() if k in found
    }
    assert all(None not in dims for dims in found.values())
    assert len(found) == len(list(model.graph.inputs)) + sum(len(n.outputs) for n in model.graph)


# The Expand output's batch dim is an unknown symbol instead of ``batch``.
_UNKNOWN_EXPAND = _EXPAND_TO_BATCH.replace("<float[batch, 4] e>", "<float[unk, 4] e>")


def test_a_dim_that_needs_run_time_values_gives_none() -> None:
    assert "unk" in _UNKNOWN_EXPAND
    model = ir.from_proto(onnx.parser.parse_model(_UNKNOWN_EXPAND))
    prepare(model)
    # `e` is [unk, 4] and its Expand target is computed from Shape(x): only data propagation
    # over the whole model knows it, so the caller must fall back.
    assert local_shapes(model, 1) is None
    assert _skeleton_reference(model, 1)["e"] == [1, 4]


def test_analysis_of_a_dynamic_vit_uses_no_whole_model_inference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnx_graph.analysis as analysis

    def no_skeleton(*args: object, **kwargs: object) -> None:
        raise AssertionError("whole-model inference should not be needed")

    monkeypatch.setattr(analysis, "SkeletonInference", no_skeleton)
    module = randomize_module(tiny_vit(), seed=2)
    model = og.lower(module, (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    groups = og.analyze(model)
    assert len(groups.prunable) >= 3  # MLP hidden and head dims of both blocks


_UNTIDY = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2, 4] y) {
  c = Constant<value = float[1] {2.0}>()
  i = Identity(x)
  y = Mul(i, c)
}
"""


def test_prepare_runs_only_the_passes_with_work() -> None:
    model = ir.from_proto(onnx.parser.parse_model(_UNTIDY))
    assert _needed_passes(model.graph) >= {"Constant", "Identity", "names"}  # nodes unnamed
    prepare(model)
    assert [n.op_type for n in model.graph] == ["Mul"]
    assert len(model.graph.initializers) == 1
    model.meta.clear()
    assert _needed_passes(model.graph) == set()  # tidy now: nothing to do
    duplicate = ir.from_proto(onnx.parser.parse_model(_UNTIDY))
    for node in duplicate.graph:
        node.name = "same"
    assert "names" in _needed_passes(duplicate.graph)
