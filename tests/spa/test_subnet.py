"""Subnet construction: the pruned ONNX model and the pruned module equal the group-sparse module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnx_graph.testing import run_onnx
from spa.channel_layout import ChannelLayout
from spa.hesso import HESSO
from spa.sparse_training import SparseTraining
from spa.subnet import construct_subnet
from tests.spa.tiny_models import TINY_MODELS, tiny, tiny_mapped


def _hesso_train(model, x, layout, steps=6):
    targets = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(0))
    optimizer = HESSO(
        model.parameters(),
        layout,
        variant="adam",
        lr=0.01,
        target_group_sparsity=0.5,
        start_pruning_step=1,
        pruning_periods=2,
        pruning_steps=4,
    )
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x)[:, :3], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("name", TINY_MODELS)
def test_subnet_equals_group_sparse_model(name):
    model, x, mapping = tiny_mapped(name)
    layout = ChannelLayout(model, mapping)
    optimizer = _hesso_train(model, x, layout)
    zero_channels = int(layout.zero_channels().sum())
    assert zero_channels == optimizer.target_channels > 0
    subnet = construct_subnet(model, (x[:2],))
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
        pruned_torch = subnet.module(x).numpy()
    tolerance = 1e-5 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(run_onnx(subnet.onnx, x.numpy())[0], expected, atol=tolerance)
    np.testing.assert_allclose(pruned_torch, expected, atol=tolerance)
    assert subnet.removed_channels == zero_channels
    dense_params = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in subnet.module.parameters()) < dense_params
    onnx_params = sum(v.const_value.size for v in subnet.onnx.graph.initializers.values())
    dense_onnx_params = sum(
        v.const_value.size for v in subnet.dense_onnx.graph.initializers.values()
    )
    assert onnx_params < dense_onnx_params


def test_three_line_api_on_resnet():
    model, x = tiny("resnet", seed=3)
    sparse = SparseTraining(model, (x[:2],))
    optimizer = sparse.hesso(lr=0.05, target_group_sparsity=0.5, pruning_steps=2, pruning_periods=1)
    targets = torch.arange(len(x)) % 10
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    subnet = sparse.construct_subnet()
    assert model.training
    convs = [m for m in subnet.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(c.out_channels for c in convs) < sum(
        m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)
    )
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(subnet.module(x).numpy(), model(x).numpy(), atol=1e-5)
