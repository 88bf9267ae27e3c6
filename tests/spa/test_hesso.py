"""HESSO: exact target sparsity with exact zeros, linear shrinking, score-ordered selection."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from spa.channel_layout import ChannelLayout
from spa.hesso import HESSO
from tests.spa.tiny_models import tiny_mapped


def _train(model, x, optimizer, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    model.train()
    output = model(x)
    targets = torch.randint(0, output.shape[1], (len(x),), generator=generator)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("variant", ["sgd", "adam", "adamw"])
def test_reaches_exact_target_with_exact_zeros(variant):
    model, x, mapping = tiny_mapped("conv1d")
    layout = ChannelLayout(model, mapping)
    optimizer = HESSO(
        model.parameters(),
        layout,
        variant=variant,
        lr=0.01,
        weight_decay=1e-3,
        target_group_sparsity=0.5,
        start_pruning_step=2,
        pruning_periods=3,
        pruning_steps=9,
    )
    _train(model, x, optimizer, 11)
    target = round(0.5 * layout.num_channels)
    assert optimizer.target_channels == target == 6
    zero = layout.zero_channels()
    assert int(zero.sum()) == target
    assert torch.equal(zero, optimizer.pruned)
    assert optimizer.metrics()["group_sparsity"] == pytest.approx(target / layout.num_channels)
    # projection keeps them at exact zero under further updates
    _train(model, x, optimizer, 3, seed=1)
    assert torch.equal(layout.zero_channels(), optimizer.pruned)
    for slot in layout.slots:
        rows = slot.rows(slot.parameter.detach())[optimizer.pruned[slot.channel]]
        assert rows.numel() == 0 or float(rows.abs().max()) == 0.0


def test_periods_shrink_linearly_to_zero():
    model, x, mapping = tiny_mapped("mlp")  # one group: no element lies in two shrinking channels
    layout = ChannelLayout(model, mapping)
    # lr 0: only HESSO's shrinking changes the weights, so the norms follow the schedule exactly
    optimizer = HESSO(
        model.parameters(),
        layout,
        variant="sgd",
        lr=0.0,
        momentum=0.0,
        target_group_sparsity=0.5,
        start_pruning_step=1,
        pruning_periods=1,
        pruning_steps=4,
    )
    _train(model, x, optimizer, 1)
    initial = layout.squared_norms().sqrt()
    norms = []
    for step in range(4):
        _train(model, x, optimizer, 1, seed=step)
        shrinking = optimizer.redundant if step < 3 else optimizer.pruned
        assert int(shrinking.sum()) == 4
        ratio = layout.squared_norms().sqrt()[shrinking] / initial[shrinking]
        norms.append(ratio.numpy())
    expected = np.repeat([[0.75], [0.5], [0.25], [0.0]], 4, axis=1)
    np.testing.assert_allclose(np.stack(norms), expected, atol=1e-6)
    metrics = optimizer.metrics()
    assert metrics["norm_redundant"] == 0.0 and metrics["norm_important"] > 0


def test_selection_follows_scores_not_index_order():
    model, _, mapping = tiny_mapped("mlp")
    layout = ChannelLayout(model, mapping)
    optimizer = HESSO(model.parameters(), layout, target_group_sparsity=0.5)
    scores = torch.tensor([0.5, 9.0, 8.0, 7.0, 6.0, 0.1, 0.3, 0.2], dtype=torch.float64)
    # a sorted set difference would give [0, 1, 2]; the lowest scores are 5, 7, 6
    assert optimizer.select_by_score(scores, 3).tolist() == [5, 7, 6]
    # equal scores keep their order (stable), the quota is never exceeded
    assert optimizer.select_by_score(torch.zeros(8, dtype=torch.float64), 2).tolist() == [0, 1]


def test_selection_respects_min_keep_across_groups():
    model, _, mapping = tiny_mapped("mlp3d")
    layout = ChannelLayout(model, mapping)
    optimizer = HESSO(model.parameters(), layout, min_keep=2)
    n = layout.num_channels
    scores = torch.arange(n, 0, -1, dtype=torch.float64)  # highest index = lowest score
    chosen = optimizer.select_by_score(scores, n)
    kept = np.bincount(layout.channel_group, minlength=len(mapping.mapped)) - np.bincount(
        layout.channel_group[chosen], minlength=len(mapping.mapped)
    )
    assert kept.tolist() == [2] * len(mapping.mapped)
    assert np.all(np.diff(scores.numpy()[chosen]) >= 0)  # taken in score order


def test_rejects_bad_settings():
    model, _, mapping = tiny_mapped("mlp3d")
    layout = ChannelLayout(model, mapping)
    with pytest.raises(ValueError, match="variant"):
        HESSO(model.parameters(), layout, variant="lion")
    with pytest.raises(ValueError, match="target_group_sparsity"):
        HESSO(model.parameters(), layout, target_group_sparsity=1.0)
    with pytest.raises(ValueError, match="pruning_periods"):
        HESSO(model.parameters(), layout, pruning_periods=4, pruning_steps=2)


def test_checkpoint_resumes_the_schedule():
    model, x, mapping = tiny_mapped("mlp")
    layout = ChannelLayout(model, mapping)
    options = dict(
        lr=0.01, target_group_sparsity=0.5, start_pruning_step=1, pruning_periods=2, pruning_steps=4
    )
    optimizer = HESSO(model.parameters(), layout, **options)
    _train(model, x, optimizer, 3)
    restored = HESSO(model.parameters(), layout, **options)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.num_steps == 3 and torch.equal(restored.pruned, optimizer.pruned)
    assert int(restored.pruned.sum()) == 2  # the first of two periods is committed
    _train(model, x, restored, 3)
    assert int(layout.zero_channels().sum()) == 4


def test_keep_floor_caps_each_group_and_the_target():
    model, _, mapping = tiny_mapped("mlp3d")
    layout = ChannelLayout(model, mapping)
    sizes = [g.num_channels for g in mapping.mapped]
    optimizer = HESSO(model.parameters(), layout, target_group_sparsity=0.6, min_keep_fraction=0.5)
    floors = [int(np.ceil(0.5 * n)) for n in sizes]
    assert optimizer.group_min_keep.tolist() == floors
    assert optimizer.target_channels == sum(sizes) - sum(floors) < round(0.6 * sum(sizes))
    chosen = optimizer.select_by_score(torch.zeros(layout.num_channels, dtype=torch.float64), 100)
    assert len(chosen) == optimizer.target_channels
    # the default floor is half the average kept fraction
    default = HESSO(model.parameters(), layout, target_group_sparsity=0.7)
    assert default.group_min_keep.tolist() == [int(np.ceil(0.15 * n)) for n in sizes]


@pytest.mark.parametrize(
    ("variant", "reference"),
    [
        ("sgd", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2)),
        ("adam", lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=1e-2)),
        ("adamw", lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=1e-2)),
    ],
)
def test_dense_steps_match_torch_optimizers(variant, reference):
    model, x, mapping = tiny_mapped("mlp")
    twin = copy.deepcopy(model)
    optimizer = HESSO(
        model.parameters(),
        ChannelLayout(model, mapping),
        variant=variant,
        lr=0.05,
        weight_decay=1e-2,
        start_pruning_step=100,
        pruning_steps=10,
    )
    _train(model, x, optimizer, 4)
    _train(twin, x, reference(twin.parameters()), 4)
    for (name, ours), theirs in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
