"""SPA pruning: importance criteria, plans and the public ``prune`` entry point."""

from onnx_graph.plan import PruningPlan
from onnx_graph.surgery import prune, zero_out
from spa.allocation import channels_to_keep, eligible_groups, plan_uniform
from spa.importance import (
    ImportanceCriterion,
    get_criterion,
    register_criterion,
    registered_criteria,
)

__all__ = [
    "ImportanceCriterion",
    "PruningPlan",
    "channels_to_keep",
    "eligible_groups",
    "get_criterion",
    "plan_uniform",
    "prune",
    "register_criterion",
    "registered_criteria",
    "zero_out",
]
