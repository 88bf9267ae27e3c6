"""Apply a pruning plan to an ONNX graph: slice initializers, fix shapes and shape constants.

``prune`` removes channels; ``zero_out`` keeps the dense graph but writes zeros (or a neutral value)
into exactly the parameters that would be removed. Their outputs must agree: that is the oracle.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import values_by_name
from onnx_graph.gc_pause import without_gc
from onnx_graph.kept_slices import (
    BackgroundGather,
    Cuts,
    compact_kept,
    exclusively_owned,
    kept_slices,
)
from onnx_graph.plan import PruningPlan
from onnx_graph.rules.base import rule_for
from onnx_graph.surgery_context import SurgeryContext
from onnx_graph.validate import check_model

logger = logging.getLogger(__name__)


@without_gc
def prune(
    model: ir.Model, plan: PruningPlan, *, validate: bool = True, copy: bool = True
) -> ir.Model:
    """Return ``model`` with the plan's channels removed.

    Args:
        model: The model the plan's groups were computed on.
        plan: Channels to remove per group.
        validate: Run strict ONNX shape inference and the full checker on the result.
        copy: Prune a copy and leave ``model`` unchanged (default). ``False`` prunes ``model``
            itself, as Torch-Pruning prunes a module, and saves the graph clone (a few ms on a
            CNN, tens of ms on a ViT); the plan cannot be applied to it again.
    """
    removed = plan.removed_mask()
    kept = plan.groups.kept_positions(removed)
    axis_sizes = {(a.value_name, a.axis): a.size for a in plan.groups.axes}
    pruned = model.clone() if copy else model
    values = values_by_name(pruned.graph)
    original_sizes: dict[tuple[str, int], int] = {}
    axes_by_value: dict[str, list[tuple[int, np.ndarray]]] = {}
    for (name, axis), positions in kept.items():
        axes_by_value.setdefault(name, []).append((axis, positions))
    # Large weights go first to a helper thread, which slices them while the small ones, the
    # value shapes and the node rewrites below run here; their values hold no tensor until then
    # (no rule reads weight data during surgery).
    background = BackgroundGather()
    waiting = [
        values[name] for name, cuts in axes_by_value.items()
        if _queue_large_weight(values[name], cuts, background)
    ]  # fmt: skip
    try:
        background.start()
        for name, cuts in axes_by_value.items():
            value = values[name]
            assert value.shape is not None
            dims: list[int | ir.SymbolicDim | None] = list(value.shape)
            for axis, positions in cuts:
                original_sizes[(name, axis)] = axis_sizes[(name, axis)]
                # A symbolic dim (batch * heads, analysed at batch 1) becomes unknown: inference
                # refills it.
                dims[axis] = len(positions) if isinstance(dims[axis], int) else None
            if value.const_value is not None:  # not queued above
                value.const_value = ir.Tensor(_cut_weight(value, cuts), name=value.name)
            value.shape = ir.Shape(dims)
        ctx = SurgeryContext(pruned.graph, kept, original_sizes, axis_sizes)
        for node in list(pruned.graph):
            rule = rule_for(node)
            if rule is not None and any(ctx.changed(v) for v in (*node.inputs, *node.outputs)):
                rule.rewrite(node, ctx)
    finally:
        # Also on an error: no weight is left without its data.
        for value, array in zip(waiting, background.finish(), strict=True):
            value.const_value = ir.Tensor(array, name=value.name)
    _drop_unused_initializers(pruned.graph)
    if validate:
        check_model(pruned)
    return pruned


def _queue_large_weight(value: ir.Value, cuts: Cuts, background: BackgroundGather) -> bool:
    """Hand ``value``'s data to ``background`` when it takes it (large, floating, in memory);
    the value then holds no tensor until the caller assigns ``background.finish()``'s result."""
    tensor = value.const_value
    if type(tensor) is not ir.Tensor or not background.accepts(tensor.numpy()):
        return False
    del tensor
    array, owned = _release_array(value)
    background.add(array, cuts, in_place=owned)
    return True


def _cut_weight(value: ir.Value, cuts: Cuts) -> np.ndarray:
    """The kept part of ``value``'s data; compacted in its own buffer when nothing else holds it."""
    tensor = value.const_value
    assert tensor is not None
    if type(tensor) is ir.Tensor:
        del tensor
        array, owned = _release_array(value)
        return compact_kept(array, cuts) if owned else kept_slices(array, cuts)
    result = kept_slices(tensor.numpy(), cuts)
    if isinstance(tensor, ir.ExternalTensor):
        tensor.release()  # unmap: a large model's weights are read one at a time
    return result


def _release_array(value: ir.Value) -> tuple[np.ndarray, bool]:
    """The in-memory array of ``value``'s tensor, which the value lets go of, and whether
    nothing else holds it (then it may be compacted in place).

    The value drops its tensor first, so that an array only this model refers to is recognised
    as such (a clone sharing the tensor, a user's reference or a view keep it). The check runs
    here, with the array in one local name and no call argument holding it.
    """
    tensor = value.const_value
    assert type(tensor) is ir.Tensor
    array = tensor.numpy()
    value.const_value = None
    del tensor
    owned = exclusively_owned(array, references=1)
    return array, owned


def zero_out(model: ir.Model, plan: PruningPlan) -> ir.Model:
    """Return a dense copy of ``model`` whose to-be-removed channels contribute nothing.

    Every parameter slice the plan would remove is overwritten with its fill value (0, or 1 for
    divisors and variances), so the channel's value and its effect on consumers vanish.
    """
    removed = plan.removed_mask()
    kept = plan.groups.kept_positions(removed)
    fills = {(a.value_name, a.axis): a.fill for a in plan.groups.axes}
    zeroed = model.clone()
    values = values_by_name(zeroed.graph)
    for (name, axis), positions in kept.items():
        value = values[name]
        fill = fills[(name, axis)]
        if value.const_value is None or fill is None:
            continue
        array = value.const_value.numpy().copy()
        drop = np.setdiff1d(np.arange(array.shape[axis]), positions)
        index: list[slice | np.ndarray] = [slice(None)] * array.ndim
        index[axis] = drop
        array[tuple(index)] = fill
        value.const_value = ir.Tensor(array, name=value.name)
    return zeroed


def _drop_unused_initializers(graph: ir.Graph) -> None:
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            del graph.initializers[name]
