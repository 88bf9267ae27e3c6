"""The op-rule contract and its registry: one small rule per ONNX op type says how channels flow.

The analysis walks *channel axes* (a value and one of its axes). When an axis of a value becomes
live, the rule of every node that produces or consumes the value is asked to couple it to the axes
of the node's other inputs and outputs. A node whose op has no rule freezes what reaches it.

Minimal complete rule (a channel-preserving unary op)::

    @register_rule("Relu")
    class ReluRule(OpRule):
        def propagate(self, node, port, axis, ctx):
            ctx.couple(port, axis, ctx.output(0), axis)

``port`` is the value whose axis is live, always one of ``node``'s inputs or outputs. Rules that must
fix attributes or shape constants after channels are removed also override ``rewrite``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import onnx_ir as ir

if TYPE_CHECKING:
    from onnx_graph.analysis_context import AnalysisContext
    from onnx_graph.surgery_context import SurgeryContext

logger = logging.getLogger(__name__)


class OpRule:
    """How channels flow through one ONNX op type (see the module docstring for an example)."""

    #: Filled in by ``register_rule``.
    op_types: tuple[str, ...] = ()

    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        """Couple the live ``axis`` of ``port`` to the axes it determines on the node's values.

        Args:
            node: The node being visited.
            port: One of ``node``'s inputs or outputs whose ``axis`` is a live channel axis.
            axis: Non-negative axis index into ``port``'s shape.
            ctx: Records couplings, parameter members and frozen axes.
        """
        raise NotImplementedError

    def seed(self, node: ir.Node, ctx: AnalysisContext) -> None:
        """Declare channel axes this op creates (a Conv's output channels). Default: none."""

    def rewrite(self, node: ir.Node, ctx: SurgeryContext) -> None:
        """Fix attributes or shape constants after channels were removed. Default: nothing."""


_RULES: dict[str, OpRule] = {}
RuleClass = TypeVar("RuleClass", bound=type[OpRule])


def register_rule(*op_types: str, domain: str = "") -> Callable[[RuleClass], RuleClass]:
    """Class decorator registering one rule instance for ``op_types`` (duplicates are refused)."""

    def decorate(cls: RuleClass) -> RuleClass:
        instance = cls()
        keys = tuple(_key(domain, op_type) for op_type in op_types)
        for key in keys:
            if key in _RULES:
                raise ValueError(
                    f"op rule for {key!r} registered twice: {type(_RULES[key]).__name__} "
                    f"and {cls.__name__}"
                )
        for key in keys:
            _RULES[key] = instance
        cls.op_types = tuple(op_types)
        return cls

    return decorate


def _key(domain: str, op_type: str) -> str:
    domain = "" if domain in ("", "ai.onnx") else domain
    return f"{domain}::{op_type}" if domain else op_type


def rule_for(node: ir.Node) -> OpRule | None:
    """The registered rule for ``node``'s op type, or None when there is none."""
    return _RULES.get(_key(node.domain, node.op_type))


def registered_op_types() -> list[str]:
    """Every registered op type (``domain::Op`` for non-default domains), sorted."""
    return sorted(_RULES)
