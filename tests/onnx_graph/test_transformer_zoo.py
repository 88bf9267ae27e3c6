"""Full-size torchvision transformers prune exactly (slow: each export takes 10-60 s on 2 cores).

vit_b_16 is checked for heads, head dimensions, MLP channels and the embedding; swin_t,
convnext_tiny and maxvit_t for every group at once, against the masked-LayerNorm reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnx_graph as og
from onnx_graph.inexact_reference import masked_norm_difference
from onnx_graph.testing import oracle_difference, randomize_module
from spa.allocation import plan_uniform
from tests.onnx_graph.test_transformers import _exact

pytestmark = pytest.mark.slow


def _export(name: str, size: int) -> tuple:
    import torchvision

    module = randomize_module(getattr(torchvision.models, name)(weights=None), seed=0)
    model = og.lower(module, (torch.randn(2, 3, size, size),), dynamic_batch=True)
    images = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    return model, images


@pytest.fixture(scope="module")
def vit_b_16() -> tuple:
    return _export("vit_b_16", 224)


@pytest.mark.parametrize("attention, channels", [("heads", 12), ("head_dim", 64)])
def test_vit_b_16_attention(vit_b_16: tuple, attention: str, channels: int) -> None:
    model, images = vit_b_16
    groups = og.analyze(model, attention=attention)
    attention_groups = [g for g in groups if g.matches("*in_proj_bias")]
    assert [g.num_channels for g in attention_groups] == [channels] * 12
    plan = og.PruningPlan(groups, {g.id: np.arange(0, channels, 3) for g in attention_groups})
    assert _exact(oracle_difference(model, plan, images))


def test_vit_b_16_mlp_and_embedding(vit_b_16: tuple) -> None:
    model, images = vit_b_16
    groups = og.analyze(model, attention="heads", allow_inexact=True)
    mlp = [g for g in groups if g.matches("*mlp.0.bias")]
    assert [g.num_channels for g in mlp] == [3072] * 12
    embedding = next(g for g in groups if g.matches("conv_proj.weight"))
    assert embedding.num_channels == 768 and not embedding.exact
    assert len([m for m in embedding.parameters if m.value_name.endswith("ln_1.weight")]) == 12
    exact_plan = og.PruningPlan(groups, {g.id: np.arange(0, 3072, 2) for g in mlp})
    assert _exact(oracle_difference(model, exact_plan, images))
    plan = plan_uniform(model, groups, 0.5)
    assert embedding.id in plan.removed and len(plan.removed) == 25
    assert _exact(masked_norm_difference(model, plan, images))


@pytest.mark.parametrize("name, size", [("swin_t", 64), ("convnext_tiny", 64), ("maxvit_t", 224)])
def test_vision_transformer_every_group(name: str, size: int) -> None:
    model, images = _export(name, size)
    groups = og.analyze(model, attention="heads", allow_inexact=True)
    blocked = [g for g in groups if g.parameters and g.num_channels > 1 and not g.prunable]
    assert len(blocked) == 1  # the classifier's output
    plan = plan_uniform(model, groups, 0.5)
    pruned = og.prune(model, plan)
    assert og.count_cost(pruned).params < 0.5 * og.count_cost(model).params
    assert _exact(masked_norm_difference(model, plan, images))
