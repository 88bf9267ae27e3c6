"""Op rules, one module per family; importing this package registers every rule."""

from onnx_graph.rules import (
    concat_split,
    conv,
    einsum,
    elementwise,
    expand,
    gather_nd,
    layout,
    linear,
    norm,
    reshape,
)
from onnx_graph.rules.base import OpRule, register_rule, registered_op_types, rule_for

__all__ = [
    "OpRule",
    "concat_split",
    "conv",
    "einsum",
    "elementwise",
    "expand",
    "gather_nd",
    "layout",
    "linear",
    "norm",
    "register_rule",
    "registered_op_types",
    "reshape",
    "rule_for",
]
