"""SPA pruning: importance criteria, allocation, OBSPA and the public ``prune`` entry points."""

from onnx_graph.plan import PruningPlan
from onnx_graph.surgery import prune, zero_out
from spa import criteria as criteria
from spa.allocation import (
    ALLOCATIONS,
    allocate_global,
    allocate_uniform,
    channels_to_keep,
    eligible_groups,
    plan_global,
    plan_uniform,
    score_groups,
)
from spa.cost_target import allocate_for_macs, group_macs, macs_after
from spa.importance import (
    ImportanceCriterion,
    get_criterion,
    register_criterion,
    registered_criteria,
)
from spa.moments import Moments, estimate_moments
from spa.pipeline import PruneResult, prune_model
from spa.torch_bridge import lower_with_batchnorm

__all__ = [
    "ALLOCATIONS",
    "ImportanceCriterion",
    "Moments",
    "PruneResult",
    "PruningPlan",
    "allocate_for_macs",
    "allocate_global",
    "allocate_uniform",
    "channels_to_keep",
    "eligible_groups",
    "estimate_moments",
    "get_criterion",
    "group_macs",
    "lower_with_batchnorm",
    "macs_after",
    "plan_global",
    "plan_uniform",
    "prune",
    "prune_model",
    "register_criterion",
    "registered_criteria",
    "score_groups",
    "zero_out",
]
