"""ONNX graph layer of sparsearch: lowering, channel analysis (SPA groups), surgery and cost."""

from onnx_graph.analysis import analyze
from onnx_graph.cost import CostReport, count_cost
from onnx_graph.errors import ModelLoadError, PlanError, SparsearchError, ValidationError
from onnx_graph.groups import GroupMember, GroupSet, PruningGroup
from onnx_graph.lowering import load, lower, save
from onnx_graph.plan import PruningPlan
from onnx_graph.prepare import prepare
from onnx_graph.rules import OpRule, register_rule, registered_op_types
from onnx_graph.surgery import prune, zero_out
from onnx_graph.validate import check_model

__all__ = [
    "CostReport",
    "GroupMember",
    "GroupSet",
    "ModelLoadError",
    "OpRule",
    "PlanError",
    "PruningGroup",
    "PruningPlan",
    "SparsearchError",
    "ValidationError",
    "analyze",
    "check_model",
    "count_cost",
    "load",
    "lower",
    "prepare",
    "prune",
    "register_rule",
    "registered_op_types",
    "save",
    "zero_out",
]
