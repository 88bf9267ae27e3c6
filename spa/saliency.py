"""Channel saliency for structured-sparse training: several criteria, each normalised globally.

HESSO ranks channels by a weighted mix of criteria. Each criterion is a function of per-channel
statistics (``ChannelStatistics``) registered by name; ``mixed_saliency`` normalises every one by its
largest magnitude over the candidate channels (so criteria with different units can be added, and
channels of different layers compete on one scale) and sums them with the configured weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from spa.channel_layout import ChannelLayout

DEFAULT_WEIGHTS: dict[str, float] = {
    "magnitude": 0.2,
    "avg_magnitude": 0.2,
    "cosine_similarity": 0.2,
    "taylor_first_order": 0.2,
    "taylor_second_order": 0.2,
}


@dataclass
class ChannelStatistics:
    """Per-channel sums over a channel's elements x with gradient estimate g and curvature h."""

    squared_norm: torch.Tensor  # sum x^2
    grad_squared_norm: torch.Tensor  # sum g^2
    grad_dot: torch.Tensor  # sum g * x
    curvature_dot: torch.Tensor  # sum h * x^2
    numel: torch.Tensor  # elements per channel


SaliencyFunction = Callable[[ChannelStatistics], torch.Tensor]
_SALIENCY: dict[str, SaliencyFunction] = {}


def register_saliency(name: str) -> Callable[[SaliencyFunction], SaliencyFunction]:
    """Decorator adding a saliency criterion (higher = more important); duplicates are refused."""

    def decorate(function: SaliencyFunction) -> SaliencyFunction:
        if name in _SALIENCY:
            raise ValueError(f"saliency criterion {name!r} registered twice")
        _SALIENCY[name] = function
        return function

    return decorate


def registered_saliency() -> list[str]:
    return sorted(_SALIENCY)


@register_saliency("magnitude")
def _magnitude(stats: ChannelStatistics) -> torch.Tensor:
    return stats.squared_norm.sqrt()


@register_saliency("avg_magnitude")
def _avg_magnitude(stats: ChannelStatistics) -> torch.Tensor:
    # Per element, so that wide channels (a Flatten feeding a Linear) are not favoured by size.
    return stats.squared_norm.sqrt() / stats.numel.clamp(min=1)


@register_saliency("cosine_similarity")
def _cosine_similarity(stats: ChannelStatistics) -> torch.Tensor:
    # Cosine between x and the descent direction -g: a step that grows the channel says it helps.
    denominator = (stats.squared_norm * stats.grad_squared_norm).sqrt().clamp(min=1e-30)
    return -stats.grad_dot / denominator


@register_saliency("taylor_first_order")
def _taylor_first_order(stats: ChannelStatistics) -> torch.Tensor:
    # |loss(x) - loss(x with the channel zeroed)| to first order: |g . x|.
    return stats.grad_dot.abs()


@register_saliency("taylor_second_order")
def _taylor_second_order(stats: ChannelStatistics) -> torch.Tensor:
    # The second-order term 0.5 x^T H x with a diagonal curvature estimate h.
    return 0.5 * stats.curvature_dot


def channel_statistics(
    layout: ChannelLayout,
    gradient_of: Callable[[torch.nn.Parameter], torch.Tensor | None],
    curvature_of: Callable[[torch.nn.Parameter], torch.Tensor | None],
) -> ChannelStatistics:
    """Gather the per-channel sums from the parameters, their gradient and curvature estimates.

    Args:
        layout: The channel layout of the module.
        gradient_of: The gradient estimate of a parameter (None counts as zero).
        curvature_of: A non-negative diagonal curvature estimate of a parameter (None: g^2).
    """

    def rows_of(slot, tensor):  # type: ignore[no-untyped-def]
        return slot.rows(tensor.detach()) if tensor is not None else None

    def grad_sq(rows, slot):  # type: ignore[no-untyped-def]
        g = rows_of(slot, gradient_of(slot.parameter))
        return g.square().sum(1) if g is not None else torch.zeros(len(rows))

    def grad_dot(rows, slot):  # type: ignore[no-untyped-def]
        g = rows_of(slot, gradient_of(slot.parameter))
        return (g * rows).sum(1) if g is not None else torch.zeros(len(rows))

    def curvature_dot(rows, slot):  # type: ignore[no-untyped-def]
        h = rows_of(slot, curvature_of(slot.parameter))
        if h is None:
            g = rows_of(slot, gradient_of(slot.parameter))
            h = g.square() if g is not None else torch.zeros_like(rows)
        return (h * rows.square()).sum(1)

    return ChannelStatistics(
        squared_norm=layout.squared_norms(),
        grad_squared_norm=layout.reduce(grad_sq),
        grad_dot=layout.reduce(grad_dot),
        curvature_dot=layout.reduce(curvature_dot),
        numel=layout.channel_numel,
    )


def mixed_saliency(
    stats: ChannelStatistics,
    weights: Mapping[str, float],
    candidates: torch.Tensor | None = None,
    channel_group: np.ndarray | None = None,
) -> torch.Tensor:
    """Weighted sum of the criteria, each normalised so that criteria and layers are comparable.

    Args:
        stats: Per-channel statistics.
        weights: Criterion name -> weight (unknown names raise ValueError).
        candidates: Boolean mask of the channels that compete (default: all); scales are taken
            over them only, so channels already pruned do not skew them.
        channel_group: Group index of every channel. Given, each criterion is divided by its
            median magnitude over the group's candidates (the median: Taylor scores are heavy
            tailed), so a channel is scored relative to its layer
            and a layer whose channels are all large (many elements, large gradients) cannot
            keep its width while another collapses; the mixed scores are then ranked globally.
            Not given, each criterion is divided by its largest magnitude over all candidates.
    """
    unknown = sorted(set(weights) - set(_SALIENCY))
    if unknown:
        raise ValueError(
            f"unknown saliency criteria {unknown}; choose from {registered_saliency()}"
        )
    total = torch.zeros_like(stats.squared_norm)
    mask = candidates if candidates is not None else torch.ones_like(total, dtype=torch.bool)
    for name, weight in weights.items():
        if weight == 0:
            continue
        values = _SALIENCY[name](stats)
        total += weight * values / _scales(values.abs(), mask, channel_group)
    return total


def _scales(
    magnitudes: torch.Tensor, mask: torch.Tensor, channel_group: np.ndarray | None
) -> torch.Tensor:
    """Per-channel divisor: the global max, or the group median, of the candidates' magnitudes."""
    if channel_group is None:
        scale = magnitudes[mask].max() if bool(mask.any()) else torch.tensor(0.0)
        return torch.where(scale > 0, scale, torch.ones_like(scale)).expand_as(magnitudes)
    scales = torch.ones_like(magnitudes)
    for group in np.unique(channel_group):
        members = torch.as_tensor(channel_group == group)
        live = magnitudes[members & mask]
        median = (
            torch.quantile(live, 0.5) if len(live) else torch.tensor(0.0, dtype=magnitudes.dtype)
        )
        scales[members] = median if median > 0 else 1.0
    return scales
