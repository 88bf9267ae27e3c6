"""HESSO on a CUDA module: exact zeros on the device, subnet equal to the group-sparse module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spa.sparse_training import SparseTraining
from tests.spa.tiny_models import tiny

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("variant", ["sgd", "adamw"])
def test_hesso_with_cric_on_cuda(variant):
    model, x = tiny("resnet")
    model, x = model.cuda(), x.cuda()
    targets = torch.arange(len(x), device="cuda") % 10
    sparse = SparseTraining(model, (x[:2],))
    optimizer = sparse.hesso(
        variant=variant,
        lr=0.01,
        target_group_sparsity=0.5,
        start_pruning_step=1,
        pruning_periods=2,
        pruning_steps=4,
        cric=sparse.cric(x, targets),
    )
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert int(sparse.layout.zero_channels().sum()) == optimizer.target_channels > 0
    subnet = sparse.construct_subnet()
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(
            subnet.module(x).cpu().numpy(), model(x).cpu().numpy(), atol=1e-4
        )
