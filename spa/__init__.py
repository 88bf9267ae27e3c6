"""SPA pruning: importance criteria, plans and the public ``prune`` entry point."""

from onnx_graph.plan import PruningPlan
from onnx_graph.surgery import prune, zero_out
from spa.allocation import channels_to_keep, eligible_groups, plan_uniform
from spa.channel_layout import ChannelLayout
from spa.cric import CRIC, probe_loss
from spa.group_mapping import GroupMapping, MappedGroup, ParameterSlice, map_groups
from spa.hesso import HESSO
from spa.importance import (
    ImportanceCriterion,
    get_criterion,
    register_criterion,
    registered_criteria,
)
from spa.sparse_training import SparseTraining
from spa.subnet import Subnet, construct_subnet, prune_module

__all__ = [
    "CRIC",
    "HESSO",
    "ChannelLayout",
    "GroupMapping",
    "ImportanceCriterion",
    "MappedGroup",
    "ParameterSlice",
    "SparseTraining",
    "Subnet",
    "construct_subnet",
    "map_groups",
    "probe_loss",
    "prune_module",
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
