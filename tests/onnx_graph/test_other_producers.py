"""Graphs from other producers prune exactly: the legacy TorchScript exporter, onnxslim, skl2onnx."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

import onnx_graph as og
from onnx_graph.testing import oracle_difference, randomize_module, run_onnx
from spa.allocation import plan_uniform
from tests.onnx_graph.test_transformers import TinyBert, TinyGpt, _exact, _small_vision, tiny_vit


def _text_inputs(kind: str) -> tuple[torch.Tensor, ...]:
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12)
    mask[0, 9:] = 0.0
    return (ids, mask) if kind == "bert" else (ids,)


@pytest.mark.parametrize("kind", ["bert", "gpt"])
def test_legacy_exporter_attention_heads(kind: str) -> None:
    inputs = _text_inputs(kind)
    module = randomize_module(TinyBert() if kind == "bert" else TinyGpt(), seed=4)
    model = og.lower(module, inputs, dynamic_batch=True, dynamo=False)
    feed = {v.name: t.numpy() for v, t in zip(model.graph.inputs, inputs, strict=True)}
    groups = og.analyze(model, attention="heads")
    bias = "blocks.*.attention.q.bias" if kind == "bert" else "blocks.*.attention.qkv.bias"
    heads = [g for g in groups if g.matches(bias) and g.prunable]
    assert [g.num_channels for g in heads] == [4, 4]
    # the legacy exporter computes [B, T, H, C / H] at run time; analysis made it [-1, T, H, D]
    targets = [n.inputs[1].const_value for n in model.graph if n.op_type == "Reshape"]
    assert all(t is not None for t in targets)
    plan = plan_uniform(model, groups, 0.5)
    assert {g.id for g in heads} <= set(plan.removed)
    assert _exact(oracle_difference(model, plan, feed))


def test_legacy_exporter_freezes_the_width_its_attention_scale_reads() -> None:
    inputs = _text_inputs("gpt")
    model = og.lower(randomize_module(TinyGpt(), seed=4), inputs, dynamic_batch=True, dynamo=False)
    groups = og.analyze(model, allow_inexact=True)
    embedding = next(g for g in groups if g.matches("tokens.weight"))
    # sqrt(Shape(x)[2] / heads) would change silently with the embedding width
    assert any("size is read by" in r for r in embedding.why_not_prunable())


def test_legacy_exporter_convnext() -> None:
    model = og.lower(_small_vision("convnext"), (torch.randn(2, 3, 64, 64),), dynamo=False)
    images = np.random.default_rng(2).standard_normal((3, 3, 64, 64)).astype(np.float32)
    groups = og.analyze(model)
    plan = plan_uniform(model, groups, 0.5)
    assert len(plan.removed) == 4  # the MLP hidden layers; the embedding is LayerNorm-frozen
    assert _exact(oracle_difference(model, plan, images))


def test_onnxslim_simplified_vit() -> None:
    import onnx
    import onnxslim

    model = og.lower(randomize_module(tiny_vit(), seed=5), (torch.randn(2, 3, 32, 32),))
    slim = ir.from_proto(onnxslim.slim(ir.to_proto(model)))
    assert any(n.op_type == "Gemm" for n in slim.graph)  # onnxslim rewrote some MatMul+Add
    images = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    for attention, size in (("heads", 4), ("head_dim", 16)):
        groups = og.analyze(slim, attention=attention)
        attention_groups = [g for g in groups if g.matches("*in_proj_bias")]
        assert [g.num_channels for g in attention_groups] == [size, size]
        plan = plan_uniform(slim, groups, 0.5)
        assert len(plan.removed) == 4
        assert _exact(oracle_difference(slim, plan, images))
    assert onnx.__version__  # onnxslim works on protos; the round trip kept a valid model


def test_sklearn_mlp_classifier_through_skl2onnx() -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    features, labels = load_digits(return_X_y=True)
    features = (features / 16.0).astype(np.float32)
    classifier = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=30, random_state=0)
    with pytest.warns(Warning):  # not converged in 30 iterations: fine for structure
        classifier.fit(features, labels)
    options = {id(classifier): {"zipmap": False}}
    model = ir.from_proto(to_onnx(classifier, features[:1], options=options))
    groups = og.analyze(model)
    hidden = sorted(g.num_channels for g in groups.prunable)
    assert hidden == [16, 32]
    plan = plan_uniform(model, groups, 0.5)
    pruned = og.prune(model, plan)
    probabilities = run_onnx(pruned, features[:50])[1]
    reference = run_onnx(og.zero_out(model, plan), features[:50])[1]
    assert probabilities.shape == (50, 10)
    assert np.abs(probabilities - reference).max() < 1e-6
    assert og.count_cost(pruned).params < og.count_cost(model).params
