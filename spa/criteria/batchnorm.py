"""Network slimming: a channel is as important as the |scale| of its BatchNorm."""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnx_graph.groups import GroupSet, PruningGroup
from spa.importance import ImportanceCriterion, L1Criterion, register_criterion

logger = logging.getLogger(__name__)


@register_criterion("bn_scale")
class BatchNormScaleCriterion(ImportanceCriterion):
    """Sum over the group's BatchNorm members of |gamma| / mean |gamma| of that BatchNorm.

    Needs BatchNormalization nodes in the graph: export with ``spa.lower_with_batchnorm`` (or
    ``lower(..., optimize=False)``); ``optimize=True`` folds BN into the conv and the scales are
    gone. Groups without a BatchNorm member (an MLP hidden layer) fall back to L1 magnitude, so a
    plan can still cover every group; the fallback is logged.
    """

    def __init__(self) -> None:
        self._scales: set[str] = set()
        self._fallback = L1Criterion()

    def prepare(self, model: ir.Model, groups: GroupSet) -> None:
        self._scales = {
            node.inputs[1].name
            for node in model.graph
            if node.op_type == "BatchNormalization"
            and node.inputs[1] is not None
            and node.inputs[1].name
        }

    def score(self, model: ir.Model, group: PruningGroup) -> np.ndarray:
        if not self._scales:
            self.prepare(model, GroupSet([], np.zeros(0), np.zeros(0), np.zeros(0), []))
        total = np.zeros(group.num_channels)
        found = False
        for member in group.parameters:
            if member.value_name not in self._scales:
                continue
            value = model.graph.initializers[member.value_name]
            assert value.const_value is not None
            gamma = np.abs(value.const_value.numpy().astype(np.float64).reshape(-1))[
                member.positions
            ]
            per_channel = np.bincount(
                member.channel_index, weights=gamma, minlength=group.num_channels
            )
            if per_channel.mean() > 0:
                total += per_channel / per_channel.mean()
                found = True
        if not found:
            logger.info("group %d has no BatchNorm scale; using L1 magnitude", group.id)
            return self._fallback.score(model, group)
        return total
