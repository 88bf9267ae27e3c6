"""Map the pruning groups of an ONNX export back onto the live PyTorch module's parameters.

Structured-sparse training (HESSO) updates the PyTorch parameters, but the groups (which channels
must vanish together) come from the ONNX analysis. This module says, for every prunable group,
which slices of which ``module`` parameters and buffers hold each of its channels.

The export is the default one (``optimize=True``), whose analysis is the tested path: it folds
BatchNorm into Conv (the fused Conv keeps ``conv.weight`` but the BN parameters disappear) and
writes Linear on 3-D input as MatMul with a pre-transposed copy of the weight named ``val_N``.
Names are matched first (also ``name__copyN`` made by ``prepare``), then exact values (a 2-D
weight may match transposed: the axis flips), and a fused Conv's ``pkg.torch.onnx.name_scopes``
metadata names its BatchNorm module, whose weight, bias and running statistics share the Conv's
output channels. A fused Conv's bias that has no module counterpart is "derived": it is exactly
zero once the BN weight and bias of the channel are zero, so it does not block the mapping.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis import analyze
from onnx_graph.groups import GroupMember, GroupSet, PruningGroup
from onnx_graph.lowering import lower
from spa.allocation import eligible_groups

logger = logging.getLogger(__name__)

_COPY_SUFFIX = re.compile(r"__copy\d+$")
_BN_STATE = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class ParameterSlice:
    """Slices of one module tensor along ``axis``: ``positions[i]`` holds channel ``channel_index[i]``."""

    name: str
    axis: int
    positions: np.ndarray
    channel_index: np.ndarray
    is_buffer: bool


@dataclass
class MappedGroup:
    """A prunable ONNX group expressed as slices of the module's parameters and buffers."""

    group_id: int
    num_channels: int
    slices: list[ParameterSlice]
    derived: list[str] = field(default_factory=list)

    @property
    def parameter_slices(self) -> list[ParameterSlice]:
        """Slices of trainable parameters (what the optimizer shrinks and zeroes)."""
        return [s for s in self.slices if not s.is_buffer]


@dataclass
class GroupMapping:
    """Every trainable group of a module, with the ONNX model and groups it was derived from."""

    model: ir.Model
    groups: GroupSet
    mapped: list[MappedGroup]
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        """Channels over all mapped groups (the "variable groups" HESSO counts sparsity over)."""
        return sum(g.num_channels for g in self.mapped)


def map_groups(
    module: Any,
    example_inputs: tuple[Any, ...],
    *,
    model: ir.Model | None = None,
    exclude: Sequence[str] = (),
) -> GroupMapping:
    """Export ``module``, analyse it and map every prunable group onto its parameters.

    Args:
        module: The live ``torch.nn.Module`` (the one the optimizer will train).
        example_inputs: Positional inputs for the export.
        model: An export of ``module`` made beforehand (skips the export); it must be made from
            the module's current values, since renamed weights are matched by value.
        exclude: Globs of node, value or parameter names whose groups stay dense.

    Returns:
        The mapping; groups that cannot be mapped completely are listed in ``skipped`` with why.
    """
    if model is None:
        model = lower(module, example_inputs)
    groups = analyze(model)
    state = _module_state(module)
    fused_norms = _fused_norm_modules(model, module)
    by_value = _ValueIndex(state)
    mapping = GroupMapping(model, groups, [])
    for group in eligible_groups(groups, exclude):
        mapped, reason = _map_group(group, model, state, fused_norms, by_value)
        if mapped is None:
            mapping.skipped[group.id] = reason
            logger.info("group %d stays dense: %s", group.id, reason)
        else:
            mapping.mapped.append(mapped)
    return mapping


def _module_state(module: Any) -> dict[str, tuple[Any, bool]]:
    """Name -> (tensor, is_buffer) for every parameter and buffer of the module."""
    state: dict[str, tuple[Any, bool]] = {n: (p, False) for n, p in module.named_parameters()}
    state.update({n: (b, True) for n, b in module.named_buffers() if n not in state})
    return state


def _fused_norm_modules(model: ir.Model, module: Any) -> dict[str, str]:
    """Fused Conv weight name -> path of the BatchNorm module folded into it."""
    import torch

    modules = dict(module.named_modules())
    fused: dict[str, str] = {}
    for node in model.graph:
        if node.op_type != "Conv" or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        scopes = _name_scopes(node)
        if len(scopes) < 2:
            continue
        owner = modules.get(scopes[-2])
        if isinstance(owner, torch.nn.modules.batchnorm._BatchNorm) and owner.affine:
            fused[_COPY_SUFFIX.sub("", node.inputs[1].name or "")] = scopes[-2]
    return fused


def _name_scopes(node: ir.Node) -> list[str]:
    text = node.metadata_props.get("pkg.torch.onnx.name_scopes", "")
    return re.findall(r"'([^']*)'", text)


class _ValueIndex:
    """Finds the module tensor an anonymous initializer was copied from (maybe transposed)."""

    def __init__(self, state: dict[str, tuple[Any, bool]]) -> None:
        self._arrays = {n: t.detach().cpu().numpy() for n, (t, _) in state.items()}

    def find(self, array: np.ndarray) -> tuple[str, bool] | None:
        """(name, transposed) of the unique tensor equal to ``array`` or its transpose."""
        if array.size < 2 or np.all(array == array.reshape(-1)[0]):
            return None  # uniform arrays (zero biases) match anything: never guess
        hits = [
            (n, False)
            for n, a in self._arrays.items()
            if a.shape == array.shape and np.array_equal(a, array)
        ]
        if array.ndim == 2:
            hits += [
                (n, True)
                for n, a in self._arrays.items()
                if a.ndim == 2 and a.shape == array.shape[::-1] and np.array_equal(a.T, array)
            ]
        return hits[0] if len(hits) == 1 else None


def _map_group(
    group: PruningGroup,
    model: ir.Model,
    state: dict[str, tuple[Any, bool]],
    fused_norms: dict[str, str],
    by_value: _ValueIndex,
) -> tuple[MappedGroup | None, str]:
    slices: list[ParameterSlice] = []
    derived: list[str] = []
    for member in group.parameters:
        target = _resolve(member, model, state, by_value)
        if target is None:
            if _is_fused_bias(member, model, fused_norms):
                derived.append(member.value_name)
                continue
            return None, f"initializer {member.value_name!r} matches no module parameter"
        name, axis = target
        tensor, is_buffer = state[name]
        if tensor.dim() <= axis or tensor.shape[axis] != member.axis_size:
            return (
                None,
                f"{name} has shape {tuple(tensor.shape)}, ONNX axis {member.axis} has {member.axis_size}",
            )
        slices.append(ParameterSlice(name, axis, member.positions, member.channel_index, is_buffer))
        base = _COPY_SUFFIX.sub("", member.value_name)
        if base in fused_norms and axis == 0:
            slices.extend(_norm_slices(fused_norms[base], member, state))
    if not any(not s.is_buffer for s in slices):
        return None, "no trainable parameter holds its channels"
    return MappedGroup(group.id, group.num_channels, _unique(slices), derived), ""


def _resolve(
    member: GroupMember, model: ir.Model, state: dict[str, tuple[Any, bool]], by_value: _ValueIndex
) -> tuple[str, int] | None:
    name = _COPY_SUFFIX.sub("", member.value_name)
    if name in state:
        return name, member.axis
    value = model.graph.initializers.get(member.value_name)
    if value is None or value.const_value is None:
        return None
    found = by_value.find(value.const_value.numpy())
    if found is None:
        return None
    found_name, transposed = found
    return found_name, (1 - member.axis) if transposed else member.axis


def _is_fused_bias(member: GroupMember, model: ir.Model, fused_norms: dict[str, str]) -> bool:
    """Whether the member is the bias input of a Conv that has a BatchNorm folded into it."""
    value = model.graph.initializers.get(member.value_name)
    if value is None:
        return False
    for node, index in value.uses():
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        if node.op_type == "Conv" and index == 2 and weight is not None:
            if _COPY_SUFFIX.sub("", weight.name or "") in fused_norms:
                return True
    return False


def _norm_slices(
    path: str, member: GroupMember, state: dict[str, tuple[Any, bool]]
) -> list[ParameterSlice]:
    slices = []
    for suffix in _BN_STATE:
        name = f"{path}.{suffix}" if path else suffix
        if name in state:
            slices.append(
                ParameterSlice(name, 0, member.positions, member.channel_index, state[name][1])
            )
    return slices


def _unique(slices: list[ParameterSlice]) -> list[ParameterSlice]:
    seen: dict[tuple[str, int], ParameterSlice] = {}
    for item in slices:
        seen.setdefault((item.name, item.axis), item)
    return list(seen.values())
