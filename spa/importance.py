"""Group importance criteria: one score per channel of a pruning group (higher = keep).

The contract is in ``ImportanceCriterion``'s docstring. Criteria are registered by name with
``@register_criterion`` and built with ``get_criterion(name, **options)``; the built-in ones live
here (magnitude, random) and in ``spa.criteria`` (BatchNorm scale, Taylor, OBSPA).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import onnx_ir as ir

from onnx_graph.groups import GroupMember, GroupSet, PruningGroup
from onnx_graph.plan import PruningPlan
from spa.channel_norms import ChannelNormCache


class ImportanceCriterion:
    """Scores the channels of one pruning group; optionally repairs the model after the choice.

    Contract:
        - ``score(model, group)`` returns a float array of length ``group.num_channels``; higher
          means more important. Scores of different groups should be comparable (a relative loss,
          or normalised per layer) because global allocation ranks channels across groups.
        - ``prepare(model, groups)`` is called once before scoring a model: criteria that need
          whole-model statistics (OBSPA's moments, Taylor's gradients) compute them there.
        - ``compensate(model, plan)`` returns a model with the *same structure* (same initializer
          names and shapes) whose surviving weights absorb the removal; ``spa.prune`` then slices
          it. The default returns ``model`` unchanged.
        - Options (seed, data, module) go to ``__init__`` as keyword arguments; criteria needing
          data raise ``ValueError`` naming the missing option.

    Minimal complete criterion::

        @register_criterion("ones")
        class Ones(ImportanceCriterion):
            def score(self, model, group):
                return np.ones(group.num_channels)
    """

    name: str = ""
    #: Whether the criterion needs data (calibration batches or a PyTorch module).
    needs_data: bool = False

    def prepare(self, model: ir.Model, groups: GroupSet) -> None:
        """Precompute model-wide statistics (default: nothing)."""

    def score(self, model: ir.Model, group: PruningGroup) -> np.ndarray:
        raise NotImplementedError

    def compensate(self, model: ir.Model, plan: PruningPlan) -> ir.Model:
        """Model whose kept weights absorb the plan's removal (default: ``model`` itself)."""
        return model


_CRITERIA: dict[str, type[ImportanceCriterion]] = {}
CriterionClass = TypeVar("CriterionClass", bound=type[ImportanceCriterion])


def register_criterion(name: str) -> Callable[[CriterionClass], CriterionClass]:
    """Class decorator adding a criterion under ``name`` (a duplicate name is refused)."""

    def decorate(cls: CriterionClass) -> CriterionClass:
        if name in _CRITERIA:
            raise ValueError(f"importance criterion {name!r} registered twice")
        cls.name = name
        _CRITERIA[name] = cls
        return cls

    return decorate


def get_criterion(name: str, **options: object) -> ImportanceCriterion:
    """Instantiate the criterion registered as ``name``."""
    if name not in _CRITERIA:
        raise ValueError(f"unknown importance criterion {name!r}; choose from {sorted(_CRITERIA)}")
    return _CRITERIA[name](**options)  # type: ignore[call-arg]


def criterion_needs_data(name: str) -> bool:
    """Whether the criterion registered as ``name`` needs data or a PyTorch module to score."""
    if name not in _CRITERIA:
        raise ValueError(f"unknown importance criterion {name!r}; choose from {sorted(_CRITERIA)}")
    return _CRITERIA[name].needs_data


def registered_criteria() -> list[str]:
    """Names of all registered criteria (sorted)."""
    return sorted(_CRITERIA)


def member_channel_norms(
    model: ir.Model,
    member: GroupMember,
    order: int,
    cache: ChannelNormCache | None = None,
    num_channels: int | None = None,
) -> np.ndarray:
    """Per-channel L``order`` norm (raised to ``order``) of one parameter member's slices.

    ``cache`` shares the tensor passes between the members of one model (a weight is a member of
    two groups: its output and its input channels). ``num_channels`` (the group's) sets the
    length; by default it ends at the member's last channel.
    """
    if cache is None or cache.model is not model or cache.order != order:
        cache = ChannelNormCache(model, order)
    per_position = cache.per_position(member.value_name, member.axis)[member.positions]
    if num_channels is None:
        num_channels = int(member.channel_index.max()) + 1 if len(member.channel_index) else 0
    return np.bincount(member.channel_index, weights=per_position, minlength=num_channels)


def normalization_statistics(model: ir.Model) -> set[str]:
    """Names of BatchNorm running means and variances: statistics of the data, not weights."""
    return {
        value.name
        for node in model.graph
        if node.op_type == "BatchNormalization"
        for value in node.inputs[3:5]
        if value is not None and value.name
    }


class MagnitudeCriterion(ImportanceCriterion):
    """Per-channel norms of every weight member, normalised per member, then reduced.

    BatchNorm running statistics are members of a group (they are sliced) but are not weights:
    their size says nothing about a channel's use, so they are left out.

    Normalising each member by its mean keeps a large weight tensor from drowning the BatchNorm or
    bias terms of the same group and makes groups comparable when ranked globally.

    Args:
        reduction: How members combine: ``"sum"`` (default), ``"mean"`` or ``"max"``.
    """

    order = 1
    _REDUCTIONS: dict[str, Callable[..., np.ndarray]] = {
        "sum": np.sum,
        "mean": np.mean,
        "max": np.max,
    }

    def __init__(self, reduction: str = "sum") -> None:
        if reduction not in self._REDUCTIONS:
            raise ValueError(
                f"reduction must be one of {sorted(self._REDUCTIONS)}, got {reduction!r}"
            )
        self.reduction = reduction

    def prepare(self, model: ir.Model, groups: GroupSet) -> None:
        cache = self._bind(model, fresh=True)  # weights may have changed since the last prepare
        cache.prefetch(
            (member.value_name, member.axis)
            for group in groups.prunable
            for member in group.parameters
            if member.value_name not in self._statistics
        )

    def _bind(self, model: ir.Model, fresh: bool = False) -> ChannelNormCache:
        """Norm cache for ``model`` (shared by the groups of one scoring pass)."""
        cache: ChannelNormCache | None = getattr(self, "_cache", None)
        if fresh or cache is None or cache.model is not model:
            cache = self._cache = ChannelNormCache(model, self.order)
            self._statistics = normalization_statistics(model)
        return cache

    def score(self, model: ir.Model, group: PruningGroup) -> np.ndarray:
        rows = []
        cache = self._bind(model)
        for member in group.parameters:
            if member.value_name in self._statistics:
                continue
            norms = member_channel_norms(model, member, self.order, cache, group.num_channels)
            mean = norms.sum() / norms.size  # np.mean's bookkeeping costs more than the sum
            if mean > 0:
                rows.append(norms / mean)
        if not rows:
            return np.zeros(group.num_channels)
        total = self._REDUCTIONS[self.reduction](np.stack(rows), axis=0)
        return np.sqrt(total) if self.order == 2 else total


@register_criterion("l1")
class L1Criterion(MagnitudeCriterion):
    order = 1


@register_criterion("l2")
class L2Criterion(MagnitudeCriterion):
    order = 2


@register_criterion("random")
class RandomCriterion(ImportanceCriterion):
    """Uniform random scores: the baseline every informed criterion must beat."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def score(self, model: ir.Model, group: PruningGroup) -> np.ndarray:
        return self._rng.random(group.num_channels)
