"""SPA pruning: importance criteria, allocation, OBSPA, HESSO/CRIC and the ``prune`` entry points."""

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
from spa.channel_layout import ChannelLayout
from spa.cost_target import allocate_for_macs, group_macs, macs_after
from spa.cric import CRIC, probe_loss
from spa.group_mapping import GroupMapping, MappedGroup, ParameterSlice, map_groups
from spa.hesso import HESSO
from spa.importance import (
    ImportanceCriterion,
    get_criterion,
    register_criterion,
    registered_criteria,
)
from spa.moments import Moments, estimate_moments
from spa.pipeline import PruneResult, prune_model
from spa.sparse_training import SparseTraining
from spa.subnet import Subnet, construct_subnet, prune_module
from spa.torch_bridge import lower_with_batchnorm

__all__ = [
    "ALLOCATIONS",
    "CRIC",
    "HESSO",
    "ChannelLayout",
    "GroupMapping",
    "ImportanceCriterion",
    "MappedGroup",
    "Moments",
    "ParameterSlice",
    "PruneResult",
    "PruningPlan",
    "SparseTraining",
    "Subnet",
    "allocate_for_macs",
    "allocate_global",
    "allocate_uniform",
    "channels_to_keep",
    "construct_subnet",
    "eligible_groups",
    "estimate_moments",
    "get_criterion",
    "group_macs",
    "lower_with_batchnorm",
    "macs_after",
    "map_groups",
    "plan_global",
    "plan_uniform",
    "probe_loss",
    "prune",
    "prune_model",
    "prune_module",
    "register_criterion",
    "registered_criteria",
    "score_groups",
    "zero_out",
]
