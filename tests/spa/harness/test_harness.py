"""Harness: packaged datasets, the reference architectures, training, masked fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnx_graph
from onnx_graph import count_cost
from spa.harness import (
    Dataset,
    accuracy_onnx,
    accuracy_torch,
    build_model,
    channel_masks,
    finetune_pruned,
    load_case,
    load_dataset,
    train_model,
)
from spa.pipeline import prune_model
from spa.torch_bridge import lower_with_batchnorm
from tests.spa.conftest import TinyCase


def test_datasets_ship_offline_and_are_standardised() -> None:
    digits = load_dataset("digits")
    assert digits.x_train.shape == (1078, 1, 32, 32) and digits.x_test.shape == (719, 1, 32, 32)
    assert abs(float(digits.x_train.mean())) < 1e-4 and abs(float(digits.x_train.std()) - 1) < 1e-3
    assert sorted(np.unique(digits.y_train).tolist()) == list(range(10))
    signals = load_dataset("mnist1d")
    assert signals.x_train.shape == (4000, 1, 40) and signals.x_test.shape == (1000, 1, 40)
    assert signals.spatial_dims == 1 and digits.spatial_dims == 2
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


@pytest.mark.parametrize("architecture", ["resnet", "mobilenet", "vit"])
def test_architectures_export_with_prunable_groups(architecture: str) -> None:
    module = build_model(architecture, (1, 40), 10)
    x = torch.randn(3, 1, 40)
    assert module(x).shape == (3, 10)
    model = lower_with_batchnorm(module, (x,))
    groups = onnx_graph.analyze(model)
    assert len(groups.prunable) >= 2
    assert any(n.op_type == "BatchNormalization" for n in model.graph)
    assert accuracy_onnx(model, x.numpy(), np.zeros(3, dtype=np.int64)) == accuracy_torch(
        module, x.numpy(), np.zeros(3, dtype=np.int64)
    )


def test_training_learns_and_masks_hold() -> None:
    data = load_dataset("mnist1d")
    small = Dataset(
        "small", data.x_train[:800], data.y_train[:800], data.x_test[:400], data.y_test[:400], 10
    )
    module = build_model("resnet", small.input_shape, 10)
    before = accuracy_torch(module, small.x_test, small.y_test)
    mask = torch.ones_like(module.fc.weight)
    mask[:, :5] = 0
    train_model(module, small, 3, lr=1e-2, masks={"fc.weight": mask})
    after = accuracy_torch(module, small.x_test, small.y_test)
    assert after > max(before, 10.0) + 15.0
    assert torch.all(module.fc.weight[:, :5] == 0)


def test_finetune_keeps_removed_channels_removed(tiny_case: TinyCase) -> None:
    result = prune_model(tiny_case.model, criterion="obspa", ratio=0.5, groups=tiny_case.groups)
    masks = channel_masks(result.compensated, result.plan, tiny_case.module)
    assert "conv1.weight" in masks and float(masks["conv1.weight"].mean()) == pytest.approx(0.5)
    labels = tiny_case.y
    dataset = Dataset("tiny", tiny_case.x, labels, tiny_case.x, labels, 5)
    tuned = finetune_pruned(
        result.compensated, result.plan, tiny_case.module, dataset, epochs=3, lr=1e-2
    )
    assert count_cost(tuned).macs == count_cost(result.pruned).macs
    assert accuracy_onnx(tuned, tiny_case.x, labels) >= accuracy_onnx(
        result.pruned, tiny_case.x, labels
    )


@pytest.mark.slow
def test_load_case_trains_then_reads_the_cache(tmp_path) -> None:
    first = load_case("resnet", "mnist1d", cache_dir=tmp_path)
    assert (tmp_path / "resnet-mnist1d.pt").exists() and first.accuracy > 85.0
    again = load_case("resnet", "mnist1d", cache_dir=tmp_path)
    assert again.accuracy == first.accuracy
