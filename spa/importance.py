"""Group importance criteria: one score per channel of a pruning group (higher = keep).

Contract (``ImportanceCriterion``): ``score(model, group)`` returns a float array of length
``group.num_channels``. Criteria are registered by name and looked up with ``get_criterion``.

Minimal complete criterion::

    @register_criterion("ones")
    class Ones(ImportanceCriterion):
        def score(self, model, group):
            return np.ones(group.num_channels)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import onnx_ir as ir

from onnx_graph.groups import GroupMember, PruningGroup


class ImportanceCriterion:
    """Scores the channels of one group; see the module docstring for the contract."""

    name: str = ""

    def score(self, model: ir.Model, group: PruningGroup) -> np.ndarray:
        raise NotImplementedError


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


def registered_criteria() -> list[str]:
    return sorted(_CRITERIA)


def member_channel_norms(model: ir.Model, member: GroupMember, order: int) -> np.ndarray:
    """Per-channel L``order`` norm (raised to ``order``) of one parameter member's slices."""
    value = model.graph.initializers[member.value_name]
    assert value.const_value is not None
    array = value.const_value.numpy()
    other_axes = tuple(a for a in range(array.ndim) if a != member.axis)
    magnitude = np.abs(array) if order == 1 else np.square(array)
    per_position = magnitude.sum(axis=other_axes, dtype=np.float64)[member.positions]
    group_size = int(member.channel_index.max()) + 1 if len(member.channel_index) else 0
    return np.bincount(member.channel_index, weights=per_position, minlength=group_size)


class MagnitudeCriterion(ImportanceCriterion):
    """Sum over parameter members of per-channel norms, each member normalised by its mean.

    Normalising per member keeps a large weight tensor from drowning the BatchNorm or bias terms
    of the same group (and makes groups comparable when ranked globally).
    """

    order = 1

    def score(self, model: ir.Model, group: PruningGroup) -> np.ndarray:
        total = np.zeros(group.num_channels)
        for member in group.parameters:
            norms = member_channel_norms(model, member, self.order)
            if len(norms) < group.num_channels:
                norms = np.pad(norms, (0, group.num_channels - len(norms)))
            mean = norms.mean()
            if mean > 0:
                total += norms / mean
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
