"""Saliency criteria: each normalised globally over the candidates, mixed by weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spa.saliency import ChannelStatistics, mixed_saliency, registered_saliency


def _stats():
    return ChannelStatistics(
        squared_norm=torch.tensor([4.0, 1.0, 9.0, 0.0], dtype=torch.float64),
        grad_squared_norm=torch.tensor([1.0, 4.0, 1.0, 1.0], dtype=torch.float64),
        grad_dot=torch.tensor([-2.0, 2.0, 0.0, 0.0], dtype=torch.float64),
        curvature_dot=torch.tensor([2.0, 1.0, 8.0, 0.0], dtype=torch.float64),
        numel=torch.tensor([2.0, 1.0, 3.0, 1.0], dtype=torch.float64),
    )


def test_each_criterion_is_divided_by_its_largest_value():
    stats = _stats()
    magnitude = mixed_saliency(stats, {"magnitude": 1.0})
    assert magnitude.tolist() == pytest.approx([2 / 3, 1 / 3, 1.0, 0.0])
    average = mixed_saliency(stats, {"avg_magnitude": 1.0})
    assert average.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    # cosine between x and -g: channel 0 grows under descent, channel 1 shrinks
    cosine = mixed_saliency(stats, {"cosine_similarity": 1.0})
    assert cosine.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0])
    taylor = mixed_saliency(stats, {"taylor_first_order": 1.0, "taylor_second_order": 1.0})
    assert taylor.tolist() == pytest.approx([1.0 + 0.25, 1.0 + 0.125, 1.0, 0.0])


def test_scale_is_taken_over_candidates_only():
    candidates = torch.tensor([True, True, False, True])
    magnitude = mixed_saliency(_stats(), {"magnitude": 0.5}, candidates)
    assert magnitude.tolist() == pytest.approx([0.5, 0.25, 0.75, 0.0])


def test_unknown_criterion_is_refused():
    assert "taylor_second_order" in registered_saliency()
    with pytest.raises(ValueError, match="unknown saliency"):
        mixed_saliency(_stats(), {"hessian_trace": 1.0})


def test_group_normalisation_scores_channels_relative_to_their_group():
    stats = _stats()
    groups = np.array([0, 0, 1, 1])
    magnitude = mixed_saliency(stats, {"magnitude": 1.0}, channel_group=groups)
    # group 0: norms 2 and 1, median 1.5; group 1: norms 3 and 0, median 1.5
    assert magnitude.tolist() == pytest.approx([2 / 1.5, 1 / 1.5, 3 / 1.5, 0.0])
    # a pruned channel does not count towards its group's scale
    candidates = torch.tensor([True, True, True, False])
    magnitude = mixed_saliency(stats, {"magnitude": 1.0}, candidates, groups)
    assert magnitude.tolist() == pytest.approx([2 / 1.5, 1 / 1.5, 1.0, 0.0])
