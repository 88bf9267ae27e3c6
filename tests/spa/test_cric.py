"""CRIC on constructed cases: a misjudged channel is swapped out; a worse correction is rolled back."""

from __future__ import annotations

import numpy as np
import torch

from spa.channel_layout import ChannelLayout
from spa.cric import CRIC, probe_loss
from spa.hesso import HESSO
from tests.spa.tiny_models import tiny_mapped

# Loss added by each zeroed channel of the 8-channel hidden layer: channel 0 looks least
# important to the saliency below but is the one the model cannot lose.
COSTS = np.array([10.0, 0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])


def _setup(interaction: float = 0.0):
    model, _, mapping = tiny_mapped("mlp")
    layout = ChannelLayout(model, mapping)
    optimizer = HESSO(model.parameters(), layout, target_group_sparsity=0.5)
    probes = []

    def loss_fn() -> float:
        zero = layout.zero_channels().numpy()
        probes.append(zero.copy())
        return float(COSTS[zero].sum() + (interaction if zero[1] and zero[2] else 0.0))

    return model, layout, optimizer, CRIC(loss_fn, margin=0.5, min_margin=3), probes


def test_misjudged_channel_is_swapped_out_and_values_rolled_back():
    model, layout, optimizer, cric, probes = _setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scores = torch.arange(8, dtype=torch.float64)  # saliency says: prune 0 and 1
    assert optimizer.select_by_score(scores, 2).tolist() == [0, 1]
    chosen = cric.correct(optimizer, scores, 2)
    assert sorted(chosen.tolist()) == [1, 2]
    assert optimizer.protected.nonzero().flatten().tolist() == [0]
    assert [len(c.swapped_out) for c in cric.history[0]] == [1, 0]  # corrected, then stable
    assert cric.rolled_back == [False]
    # every probe zeroed some channels, and every probe was rolled back
    assert any(p.any() for p in probes)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name])
    # later selections avoid the protected channel while others remain
    assert 0 not in optimizer.select_by_score(scores, 3).tolist()


def test_protection_expires_after_the_next_period():
    _, _, optimizer, cric, _ = _setup()
    scores = torch.arange(8, dtype=torch.float64)
    cric.correct(optimizer, scores, 2)
    assert optimizer.protected.nonzero().flatten().tolist() == [0]
    # next period: channel 0 is passed over by the selection, so it is not probed again ...
    assert sorted(cric.correct(optimizer, scores, 2).tolist()) == [1, 2]
    assert [len(c.swapped_out) for c in cric.history[1]] == [0]
    # ... and its protection, decided two periods ago, no longer distorts the selection
    assert not optimizer.protected.any()
    assert optimizer.select_by_score(scores, 2).tolist() == [0, 1]


def test_correction_that_costs_more_jointly_is_rolled_back():
    _, _, optimizer, cric, _ = _setup(interaction=100.0)  # 1 and 2 together collapse the loss
    scores = torch.arange(8, dtype=torch.float64)
    chosen = cric.correct(optimizer, scores, 2)
    assert sorted(chosen.tolist()) == [0, 1]
    assert cric.rolled_back == [True]
    assert not optimizer.protected.any()


def test_hesso_with_cric_reaches_target_on_real_loss():
    model, x, mapping = tiny_mapped("mlp")
    layout = ChannelLayout(model, mapping)
    targets = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(0))
    cric = CRIC(probe_loss(model, x, targets))
    optimizer = HESSO(
        model.parameters(),
        layout,
        lr=0.05,
        target_group_sparsity=0.5,
        start_pruning_step=1,
        pruning_periods=2,
        pruning_steps=4,
        cric=cric,
    )
    model.train()
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert len(cric.history) == 2
    assert int(layout.zero_channels().sum()) == 4
    assert model.training  # the probes ran in eval mode and restored the mode
