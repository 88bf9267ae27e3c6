"""The exactness oracle on real torchvision CNNs (randomised weights and BatchNorm statistics)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from onnx_graph import analyze, count_cost, lower  # noqa: E402
from onnx_graph.testing import oracle_difference, randomize_module, run_onnx  # noqa: E402
from spa import plan_uniform, prune  # noqa: E402

# name -> input resolution (small where the architecture allows, to keep the suite fast)
ZOO = {
    "resnet18": 64,
    "mobilenet_v3_small": 64,
    "densenet121": 64,
    "efficientnet_b0": 64,
    "shufflenet_v2_x0_5": 64,
    "squeezenet1_0": 64,
    "googlenet": 64,
    "regnet_x_400mf": 64,
    "vgg11_bn": 64,
    "mnasnet0_5": 64,
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_prunes_exactly(name: str) -> None:
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    module = randomize_module(getattr(torchvision.models, name)(weights=None, **kwargs), seed=0)
    size = ZOO[name]
    model = lower(module, (torch.randn(1, 3, size, size),), dynamic_batch=True)
    groups = analyze(model)
    assert len(groups.prunable) >= 5
    plan = plan_uniform(model, groups, 0.5, criterion="l1", round_to=1)
    inputs = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    difference, scale = oracle_difference(model, plan, inputs)
    assert difference <= 1e-4 * scale, (difference, scale)
    pruned = prune(model, plan)
    before, after = count_cost(model), count_cost(pruned)
    assert after.macs < 0.75 * before.macs
    assert run_onnx(pruned, inputs)[0].shape == (2, 1000)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5"])
def test_legacy_exporter_graph_prunes_exactly(name: str) -> None:
    module = randomize_module(getattr(torchvision.models, name)(weights=None), seed=1)
    model = lower(module, (torch.randn(1, 3, 64, 64),), dynamo=False)
    groups = analyze(model)
    plan = plan_uniform(model, groups, 0.5, criterion="l2", round_to=4)
    assert plan.num_removed > 0
    inputs = np.random.default_rng(2).standard_normal((3, 3, 64, 64)).astype(np.float32)
    difference, scale = oracle_difference(model, plan, inputs)
    assert difference <= 1e-4 * scale, (difference, scale)
