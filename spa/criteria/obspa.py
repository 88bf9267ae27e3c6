"""OBSPA: Optimal-Brain-Surgeon group saliency and compensation, with neither data nor fine-tuning.

Each consumer layer ``y = W x + b`` of a group's channels is treated as a least-squares problem
under the data-free input moments of ``spa.moments`` (mean mu, covariance C). Removing input
channels R while keeping K costs ``tr(W_R (C_RR - C_RK C_KK^-1 C_KR) W_R^T)``; the optimal repair is
``W_K += W_R C_RK C_KK^-1`` and ``b += W_R (mu_R - C_RK C_KK^-1 mu_K)``. Scores come from greedy
OBS removal (one channel at a time, inverse-covariance downdates), so correlated channels are not
both dropped. Derivation and assumptions: ``docs/obspa.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import constant_array, static_shape
from onnx_graph.groups import GroupSet, PruningGroup
from onnx_graph.plan import PruningPlan
from spa.consumers import Consumer, find_consumers
from spa.importance import ImportanceCriterion, L2Criterion, register_criterion
from spa.moments import Moments, estimate_moments

logger = logging.getLogger(__name__)


def consumer_statistics(
    consumer: Consumer, moments: dict[str, Moments], damping: float
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, damped covariance) of the consumer's input features; white when unknown."""
    size = consumer.matrix().shape[1]
    rank = len(static_shape(consumer.data) or ())
    expected_axis = rank - 1 if consumer.node.op_type == "MatMul" else 1
    found = moments.get(consumer.data.name or "")
    if found is not None and found.axis == expected_axis and len(found.mean) == size:
        mean, cov = found.mean, found.cov
    else:
        mean, cov = np.zeros(size), np.eye(size)
    scale = float(np.mean(np.diag(cov))) or 1.0
    return mean, cov + damping * scale * np.eye(size)


@register_criterion("obspa")
class ObspaCriterion(ImportanceCriterion):
    """Greedy OBS saliency of each channel on all its consumer layers (relative output error).

    Args:
        damping: Added to the covariance diagonal, as a fraction of its mean (GPTQ's percdamp):
            the moment estimates are approximate, damping keeps the inverse well conditioned.
    """

    def __init__(self, damping: float = 0.05) -> None:
        self.damping = damping
        self._moments: dict[str, Moments] = {}
        self._consumers: dict[tuple[str, int], Consumer] = {}
        self._prepared_for: int | None = None
        self._fallback = L2Criterion()

    def prepare(self, model: ir.Model, groups: GroupSet) -> None:
        self._moments = estimate_moments(model)
        self._consumers = {(c.weight.name or "", c.input_axis): c for c in find_consumers(model)}
        self._prepared_for = id(model)

    def _ensure(self, model: ir.Model) -> None:
        if self._prepared_for != id(model):
            self.prepare(model, GroupSet([], np.zeros(0), np.zeros(0), np.zeros(0), []))

    def score(self, model: ir.Model, group: PruningGroup) -> np.ndarray:
        self._ensure(model)
        layers = []
        for member in group.parameters:
            consumer = self._consumers.get((member.value_name, member.axis))
            if consumer is None:
                continue
            weight = consumer.matrix()
            _, cov = consumer_statistics(consumer, self._moments, self.damping)
            total = float(np.einsum("ri,ij,rj->", weight, cov, weight)) or 1.0
            layers.append((weight / np.sqrt(total), np.linalg.inv(cov), member))
        if not layers:
            # No consumer to measure (e.g. only grouped convs read it): magnitude on the OBSPA scale.
            magnitude = self._fallback.score(model, group)
            return magnitude / max(float(magnitude.sum()), 1e-12)
        return _greedy_scores(group.num_channels, layers)

    def compensate(self, model: ir.Model, plan: PruningPlan) -> ir.Model:
        self._ensure(model)
        kept = plan.groups.kept_positions(plan.removed_mask())
        repaired = model.clone()
        for consumer in find_consumers(repaired):
            keep = kept.get((consumer.weight.name or "", consumer.input_axis))
            if keep is not None:
                _repair(consumer, keep, *consumer_statistics(consumer, self._moments, self.damping))
        return repaired


def _greedy_scores(
    num_channels: int, layers: Sequence[tuple[np.ndarray, np.ndarray, Any]]
) -> np.ndarray:
    """Remove channels one by one (least error first); a channel's score is the running maximum
    of the errors up to its removal, so lower scores are exactly the earlier removals."""
    weights = [w.copy() for w, _, _ in layers]
    inverses = [h.copy() for _, h, _ in layers]
    positions = [
        [member.positions[member.channel_index == c] for c in range(num_channels)]  # type: ignore[attr-defined]
        for _, _, member in layers
    ]
    alive = np.ones(num_channels, dtype=bool)
    scores = np.zeros(num_channels)
    running = 0.0
    for _ in range(num_channels - 1):
        errors = np.zeros(num_channels)
        for weight, inverse, (_, _, member) in zip(weights, inverses, layers, strict=True):
            diagonal = np.maximum(np.diag(inverse), 1e-12)
            column_error = np.square(weight).sum(axis=0) / diagonal
            errors += np.bincount(
                member.channel_index,
                weights=column_error[member.positions],
                minlength=num_channels,
            )[:num_channels]
        errors[~alive] = np.inf
        channel = int(np.argmin(errors))
        running = max(running, float(errors[channel]))
        scores[channel] = running
        alive[channel] = False
        for weight, inverse, where in zip(weights, inverses, positions, strict=True):
            for p in where[channel]:
                pivot = inverse[p, p]
                if pivot <= 1e-12:
                    continue
                weight -= np.outer(weight[:, p] / pivot, inverse[p, :])
                inverse -= np.outer(inverse[:, p], inverse[p, :]) / pivot
                inverse[p, :] = 0.0
                inverse[:, p] = 0.0
                inverse[p, p] = np.inf  # removed: zero error from now on, no updates through it
    scores[alive] = running * 2.0 + 1e-12
    return scores


def _repair(consumer: Consumer, keep: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> None:
    """Least-squares repair of one consumer for the removal of all its inputs not in ``keep``."""
    weight = consumer.matrix()
    remove = np.setdiff1d(np.arange(weight.shape[1]), keep)
    if len(remove) == 0:
        return
    transfer = np.linalg.solve(cov[np.ix_(keep, keep)], cov[np.ix_(keep, remove)]).T  # [R, K]
    weight[:, keep] += weight[:, remove] @ transfer
    shift = weight[:, remove] @ (mean[remove] - transfer @ mean[keep])
    weight[:, remove] = 0.0
    consumer.write(weight)
    bias_array = constant_array(consumer.bias)
    if consumer.bias is None or bias_array is None:
        if np.abs(shift).max() > 0:
            logger.warning(
                "%s has no bias: the mean of removed channels is not compensated",
                consumer.node.name,
            )
        return
    bias = bias_array.astype(np.float64).reshape(-1).copy()
    np.add.at(bias, consumer.output_rows(), consumer.bias_sign * shift)
    consumer.bias.const_value = ir.Tensor(
        bias.astype(bias_array.dtype).reshape(bias_array.shape), name=consumer.bias.name
    )
