"""SPA analysis: walk the graph with the op rules and merge coupled channels into pruning groups."""

from __future__ import annotations

import logging
import time
from typing import Literal

import onnx_ir as ir

import onnx_graph.rules  # noqa: F401  (registers every rule)
from onnx_graph.analysis_context import (
    AnalysisContext,
    AnalysisOptions,
    values_by_name,
)
from onnx_graph.channel_groups import build_groups
from onnx_graph.gc_pause import without_gc
from onnx_graph.groups import GroupSet
from onnx_graph.local_shapes import local_shapes
from onnx_graph.prepare import prepare
from onnx_graph.rules.base import rule_for
from onnx_graph.shape_targets import constant_reshape_targets
from onnx_graph.static_shapes import (
    Shapes,
    SkeletonInference,
    completed_shapes,
    concrete_shapes,
    has_symbolic_dims,
)

logger = logging.getLogger(__name__)


@without_gc
def analyze(
    model: ir.Model,
    *,
    prepared: bool = False,
    attention: Literal["head_dim", "heads"] = "head_dim",
    allow_inexact: bool = False,
) -> GroupSet:
    """Find every set of coupled channels in ``model``.

    Args:
        model: An onnx-ir model; it is normalised in place (names, lifted constants, shapes)
            unless ``prepared`` says that was done already.
        prepared: Skip ``prepare`` (the caller already ran it on this model).
        attention: Pruning unit inside attention: ``"head_dim"`` (dimensions of every head,
            uniformly) or ``"heads"`` (whole heads: their Q, K, V and output-projection slices).
        allow_inexact: Couple the channels of a LayerNorm-normalised axis (a transformer's
            embedding) instead of freezing it; the group is marked inexact (statistics change).

    Returns:
        The groups, each knowing its members and whether (and why not) it can be pruned.
    """
    start = time.perf_counter()
    if attention not in ("head_dim", "heads"):
        raise ValueError(f"attention must be 'head_dim' or 'heads', got {attention!r}")
    if not prepared:
        prepare(model)
    options = AnalysisOptions(attention, allow_inexact)
    batch_one = _shapes_at_batch_one(model) if has_symbolic_dims(model) else None
    with concrete_shapes(model, batch_one or {}):  # relate channel axes at batch 1
        ctx = _walk_graph(model.graph, options)
    groups = build_groups(ctx)
    logger.info(
        "analysis: %d channel axes, %d groups (%d prunable) in %.2fs",
        len(ctx.axes),
        len(groups),
        len(groups.prunable),
        time.perf_counter() - start,
    )
    return groups


def _shapes_at_batch_one(model: ir.Model) -> Shapes | None:
    """Every value's shape at batch 1; computed Reshape targets become constants on the way.

    In place: computed targets would read stale sizes after pruning.
    """
    constant_reshape_targets(model)
    from_graph = local_shapes(model)
    if from_graph is not None:
        return from_graph  # read off the graph: no whole-model inference
    inference = SkeletonInference(model)
    quick = inference.at(1, data_propagation=False)
    completed = completed_shapes(model, quick) if quick is not None else None
    return completed if completed is not None else inference.at(1)


def _walk_graph(graph: ir.Graph, options: AnalysisOptions) -> AnalysisContext:
    """Seed every rule, then follow channel axes until no new one appears."""
    ctx = AnalysisContext(graph, options)
    for node in graph:
        rule = rule_for(node)
        if rule is not None:
            ctx.current_node = node
            rule.seed(node, ctx)
    _walk(graph, ctx)
    return ctx


def _walk(graph: ir.Graph, ctx: AnalysisContext) -> None:
    values = values_by_name(graph)
    while (channel_axis := ctx.next_pending()) is not None:
        value = values[channel_axis.value_name]
        nodes: list[ir.Node] = []
        producer = value.producer()
        if producer is not None:
            nodes.append(producer)
        for consumer in value.consumers():
            if consumer not in nodes:
                nodes.append(consumer)
        for node in nodes:
            ctx.current_node = node
            rule = rule_for(node)
            if rule is None:
                domain = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
                ctx.freeze_node(
                    node, value, channel_axis.axis, f"no rule for op {domain}{node.op_type}"
                )
                continue
            try:
                rule.propagate(node, value, channel_axis.axis, ctx)
            except Exception as error:  # a rule bug must freeze, never crash the analysis
                logger.warning(
                    "rule %s failed on node %s: %s", type(rule).__name__, node.name, error
                )
                ctx.freeze_node(node, value, channel_axis.axis, f"rule error ({error})")
    ctx.current_node = None
