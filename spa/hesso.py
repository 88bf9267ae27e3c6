"""HESSO: train a network into a structured-sparse one in a single run (arXiv 2409.09085).

Schedule: ordinary steps until ``start_pruning_step``; then ``pruning_steps`` split into
``pruning_periods`` periods. At the start of each period the channels with the lowest mixed
saliency (``spa.saliency``) join the redundant set until the period's share of the target is
reached; during the period they keep receiving updates but are shrunk linearly so that they are
exactly zero at its last step; from then on they are projected to zero at every step.

Two differences from the public implementation: the groups are those of the ONNX analysis mapped
onto the module (``spa.group_mapping``), so residual additions, depthwise convolutions and
flattened features are handled; and when more candidates exist than the quota, the lowest
*scores* win (a sorted set difference would pick by index). Optional CRIC (``spa.cric``) checks the
chosen set by measuring the loss before committing to it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from spa.channel_layout import ChannelLayout
from spa.dense_updates import VARIANT_UPDATES
from spa.saliency import DEFAULT_WEIGHTS, channel_statistics, mixed_saliency

logger = logging.getLogger(__name__)

VARIANTS = tuple(VARIANT_UPDATES)


class HESSO(torch.optim.Optimizer):
    """Hybrid efficient structured-sparse optimizer over the channels of a ``ChannelLayout``.

    Args:
        params: The module's parameters (all of them: the dense ones get plain updates).
        layout: Channel layout of the same module.
        variant: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: Learning rate (read from the param groups at every step, so schedulers work).
        momentum, dampening, nesterov: SGD options.
        betas, eps: Adam options.
        weight_decay: L2 penalty (decoupled for ``adamw``).
        target_group_sparsity: Fraction of the layout's channels that end at exact zero.
        start_pruning_step: Steps of plain training before the first period.
        pruning_periods: Number of periods the redundant set grows over.
        pruning_steps: Steps over all periods (each period lasts ``pruning_steps // periods``).
        saliency_weights: Criterion name -> weight (default: the five criteria at 0.2 each).
        saliency_normalization: ``"group"`` scores each channel relative to its group's mean
            before the global ranking (balanced layers); ``"global"`` divides each criterion by
            its largest value over all channels (the public implementation's behaviour).
        min_keep: Channels every group keeps at least.
        min_keep_fraction: Fraction of its channels every group keeps at least; by default half
            the average kept fraction, ``(1 - target_group_sparsity) / 2``: the global ranking
            may thin a layer more than others, but never to the point of cutting the network.
        cric: A ``spa.cric.CRIC`` that corrects each period's redundant set by probing the loss.
    """

    def __init__(
        self,
        params: Any,
        layout: ChannelLayout,
        *,
        variant: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        target_group_sparsity: float = 0.5,
        start_pruning_step: int = 0,
        pruning_periods: int = 1,
        pruning_steps: int = 1,
        saliency_weights: Mapping[str, float] | None = None,
        saliency_normalization: str = "group",
        min_keep: int = 1,
        min_keep_fraction: float | None = None,
        cric: Any = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown HESSO variant {variant!r}; choose from {VARIANTS}")
        if not 0.0 <= target_group_sparsity < 1.0:
            raise ValueError(
                f"target_group_sparsity must be in [0, 1), got {target_group_sparsity}"
            )
        if saliency_normalization not in ("group", "global"):
            raise ValueError(
                f"saliency_normalization must be 'group' or 'global', got {saliency_normalization!r}"
            )
        if pruning_periods < 1 or pruning_steps < pruning_periods:
            raise ValueError(
                f"need pruning_periods >= 1 and pruning_steps >= pruning_periods, got "
                f"{pruning_periods} periods over {pruning_steps} steps"
            )
        defaults = dict(
            variant=variant,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)
        self.layout = layout
        self.saliency_weights = dict(saliency_weights or DEFAULT_WEIGHTS)
        self.saliency_normalization = saliency_normalization
        self.start_pruning_step = int(start_pruning_step)
        self.pruning_periods = int(pruning_periods)
        self.period_length = int(pruning_steps) // self.pruning_periods
        if min_keep_fraction is None:
            min_keep_fraction = (1.0 - target_group_sparsity) / 2
        sizes = np.array([g.num_channels for g in layout.mapping.mapped], dtype=np.int64)
        self.group_min_keep = np.minimum(
            sizes,
            np.maximum(
                max(1, int(min_keep)), np.ceil(min_keep_fraction * sizes - 1e-9).astype(np.int64)
            ),
        )
        self.cric = cric
        self.num_steps = 0
        n = layout.num_channels
        capacity = int((sizes - self.group_min_keep).sum())
        self.target_channels = min(capacity, int(round(target_group_sparsity * n)))
        self.period_targets = [
            int(round(self.target_channels * (p + 1) / self.pruning_periods))
            for p in range(self.pruning_periods)
        ]
        self.pruned = torch.zeros(n, dtype=torch.bool)
        self.redundant = torch.zeros(n, dtype=torch.bool)  # shrinking in the current period
        self.protected = torch.zeros(n, dtype=torch.bool)  # found indispensable by CRIC last period
        self.last_scores: torch.Tensor | None = None

    # ----- schedule ----------------------------------------------------------------------------
    def _period_position(self) -> tuple[int, int] | None:
        """(period, step within it) of the current step, or None outside the pruning phase."""
        relative = self.num_steps - 1 - self.start_pruning_step
        if relative < 0 or relative >= self.period_length * self.pruning_periods:
            return None
        return relative // self.period_length, relative % self.period_length

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One update; at a period start it first chooses the channels to shrink."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.num_steps += 1
        position = self._period_position()
        if position is not None and position[1] == 0:
            self._commit()
            self._choose_redundant(self.period_targets[position[0]] - int(self.pruned.sum()))
        for group in self.param_groups:
            VARIANT_UPDATES[group["variant"]](self.state, group)
        if position is not None and bool(self.redundant.any()):
            remaining = self.period_length - position[1]
            factors = torch.ones(self.layout.num_channels, dtype=torch.float64)
            factors[self.redundant] = (remaining - 1.0) / remaining
            self.layout.scale_(factors)
            if remaining == 1:
                self._commit()
        self.layout.zero_(self.pruned)
        return loss

    def _commit(self) -> None:
        self.layout.zero_(self.redundant)
        self.pruned |= self.redundant
        self.redundant = torch.zeros_like(self.redundant)

    # ----- selection ---------------------------------------------------------------------------
    def saliency(self) -> torch.Tensor:
        """Mixed saliency of every channel (higher = more important), from current gradients."""
        stats = channel_statistics(self.layout, self._gradient_estimate, self._curvature_estimate)
        candidates = ~(self.pruned | self.redundant)
        groups = self.layout.channel_group if self.saliency_normalization == "group" else None
        return mixed_saliency(stats, self.saliency_weights, candidates, groups)

    def _choose_redundant(self, quota: int) -> None:
        if quota <= 0:
            return
        scores = self.saliency()
        self.last_scores = scores
        if self.cric is not None:
            chosen = self.cric.correct(self, scores, quota)
        else:
            chosen = self.select_by_score(scores, quota)
        self.redundant[torch.as_tensor(chosen, dtype=torch.long)] = True
        logger.info("step %d: %d channels start shrinking", self.num_steps, len(chosen))

    def select_by_score(
        self, scores: torch.Tensor, quota: int, excluded: torch.Tensor | None = None
    ) -> np.ndarray:
        """The ``quota`` lowest-scoring candidates, each group keeping its minimum of channels.

        Overflow is resolved by score order (stable for ties), never by channel index. Channels
        CRIC found indispensable in the last corrected period are taken only when the others
        cannot fill the quota.

        Args:
            scores: One score per channel (lower = pruned first).
            quota: How many channels to return at most.
            excluded: Boolean mask of channels that must not be returned.
        """
        live = ~(self.pruned | self.redundant)
        allowed = live.clone() if excluded is None else live & ~excluded
        left = np.bincount(
            self.layout.channel_group[live.numpy()], minlength=len(self.layout.mapping.mapped)
        )
        order = np.argsort(scores.numpy(), kind="stable")
        chosen: list[int] = []
        for pass_mask in (allowed & ~self.protected, allowed & self.protected):
            admissible = pass_mask.numpy()
            for channel in order:
                if len(chosen) == quota:
                    break
                group = self.layout.channel_group[channel]
                if admissible[channel] and left[group] > self.group_min_keep[group]:
                    chosen.append(int(channel))
                    left[group] -= 1
        return np.asarray(chosen, dtype=np.int64)

    # ----- estimates used by the saliency ------------------------------------------------------
    def _gradient_estimate(self, parameter: torch.nn.Parameter) -> torch.Tensor | None:
        # The first moment (momentum / Adam's m) is an average over recent batches: less noisy.
        state = self.state.get(parameter, {})
        for key in ("exp_avg", "momentum_buffer"):
            if key in state:
                return state[key]
        return parameter.grad

    def _curvature_estimate(self, parameter: torch.nn.Parameter) -> torch.Tensor | None:
        # Adam's second moment is a diagonal Fisher estimate; without it, g^2 of the batch.
        return self.state.get(parameter, {}).get("exp_avg_sq")

    # ----- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The usual optimizer state plus HESSO's schedule: step count and channel sets."""
        state = super().state_dict()
        state["hesso"] = {
            "num_steps": self.num_steps,
            "pruned": self.pruned.clone(),
            "redundant": self.redundant.clone(),
            "protected": self.protected.clone(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict`` taken from a HESSO over the same layout."""
        state_dict = dict(state_dict)
        schedule = state_dict.pop("hesso", None)
        super().load_state_dict(state_dict)
        if schedule is not None:
            if len(schedule["pruned"]) != self.layout.num_channels:
                raise ValueError(
                    f"checkpoint has {len(schedule['pruned'])} channels, this layout {self.layout.num_channels}"
                )
            self.num_steps = int(schedule["num_steps"])
            self.pruned, self.redundant = schedule["pruned"].clone(), schedule["redundant"].clone()
            self.protected = schedule["protected"].clone()

    # ----- metrics -----------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Group sparsity (exact zeros) and norms of the important and redundant channels."""
        squared = self.layout.squared_norms()
        redundant = self.pruned | self.redundant
        n = max(1, self.layout.num_channels)
        return {
            "step": float(self.num_steps),
            "group_sparsity": float((squared == 0).sum()) / n,
            "target_group_sparsity": self.target_channels / n,
            "num_pruned": float(self.pruned.sum()),
            "num_shrinking": float(self.redundant.sum()),
            "num_protected": float(self.protected.sum()),
            "norm_important": math.sqrt(float(squared[~redundant].sum())),
            "norm_redundant": math.sqrt(float(squared[redundant].sum())),
        }

    def sparsity_by_group(self) -> dict[int, float]:
        """ONNX group id -> fraction of its channels at exact zero (where the budget went)."""
        zero = (self.layout.squared_norms() == 0).numpy()
        return {
            mapped.group_id: float(zero[self.layout.group_channels(index)].mean())
            for index, mapped in enumerate(self.layout.mapping.mapped)
        }
