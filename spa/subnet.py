"""Turn a group-sparse module into the smaller network: a pruned ONNX model and a pruned module.

A channel is removed when every slice of it is exactly zero, both in the ONNX export (all its
initializer slices whose neutral value is 0; a folded BatchNorm bias included) and in the module
(all its trainable parameter slices). Removing such a channel changes no output, so the pruned
ONNX model and the pruned module compute what the group-sparse module computes.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from onnx_graph.groups import PruningGroup
from onnx_graph.plan import PruningPlan
from onnx_graph.surgery import prune
from spa.group_mapping import GroupMapping, MappedGroup, map_groups

logger = logging.getLogger(__name__)


@dataclass
class Subnet:
    """The pruned network in both forms, with the plan that produced the ONNX one."""

    onnx: ir.Model
    module: Any
    plan: PruningPlan
    dense_onnx: ir.Model

    @property
    def removed_channels(self) -> int:
        return self.plan.num_removed


def construct_subnet(
    module: Any, example_inputs: tuple[Any, ...], *, exclude: tuple[str, ...] = ()
) -> Subnet:
    """Build the pruned ONNX model and the pruned copy of ``module`` from its zero channels.

    Args:
        module: The trained group-sparse module (left unchanged).
        example_inputs: Inputs for the export.
        exclude: Globs of groups to keep whole (as given to the training).
    """
    mapping = map_groups(module, example_inputs, exclude=exclude)
    plan = zero_channel_plan(mapping, module)
    pruned_onnx = prune(mapping.model, plan)
    pruned_module = prune_module(module, mapping, plan.removed)
    return Subnet(pruned_onnx, pruned_module, plan, mapping.model)


def zero_channel_plan(mapping: GroupMapping, module: Any) -> PruningPlan:
    """A plan removing every channel that is zero in the export and in the module."""
    fills = {(a.value_name, a.axis): a.fill for a in mapping.groups.axes}
    state = dict(module.named_parameters())
    plan = PruningPlan(mapping.groups)
    for mapped in mapping.mapped:
        group = mapping.groups[mapped.group_id]
        zero = _onnx_zero_channels(mapping.model, group, fills) & _module_zero_channels(
            mapped, state
        )
        channels = np.flatnonzero(zero)
        if len(channels) >= group.num_channels:
            channels = channels[1:]  # an all-zero group keeps one (zero) channel: still exact
        if len(channels):
            plan.removed[mapped.group_id] = channels
    return plan


def _onnx_zero_channels(model: ir.Model, group: PruningGroup, fills: dict) -> np.ndarray:
    nonzero = np.zeros(group.num_channels, dtype=bool)
    for member in group.parameters:
        if fills.get((member.value_name, member.axis)) != 0.0:
            continue  # variances and divisors are neutral at 1, not at 0
        value = model.graph.initializers[member.value_name]
        assert value.const_value is not None
        rows = np.moveaxis(value.const_value.numpy(), member.axis, 0)[member.positions]
        hit = np.abs(rows.reshape(len(member.positions), -1)).max(axis=1) > 0
        nonzero[member.channel_index[hit]] = True
    return ~nonzero


def _module_zero_channels(mapped: MappedGroup, parameters: dict[str, Any]) -> np.ndarray:
    nonzero = np.zeros(mapped.num_channels, dtype=bool)
    for item in mapped.parameter_slices:
        array = parameters[item.name].detach().cpu().numpy()
        rows = np.moveaxis(array, item.axis, 0)[item.positions]
        hit = np.abs(rows.reshape(len(item.positions), -1)).max(axis=1) > 0
        nonzero[item.channel_index[hit]] = True
    return ~nonzero


def prune_module(module: Any, mapping: GroupMapping, removed: dict[int, np.ndarray]) -> Any:
    """A copy of ``module`` with the removed channels sliced out of every mapped tensor.

    Conv, Linear and BatchNorm attributes (channel counts, depthwise ``groups``) follow the new
    weight shapes; other modules only have their tensors replaced.
    """
    pruned = copy.deepcopy(module)
    kept = _kept_indices(mapping, removed, pruned)
    tensors = {**dict(pruned.named_parameters()), **dict(pruned.named_buffers())}
    owners = dict(pruned.named_modules())
    touched: dict[str, tuple[int, ...]] = {}
    for name, axes in kept.items():
        tensor = tensors[name]
        data = tensor.detach()
        for axis, indices in axes.items():
            data = data.index_select(
                axis, torch.as_tensor(indices, dtype=torch.long, device=data.device)
            )
        owner_path, _, leaf = name.rpartition(".")
        owner = owners[owner_path]
        touched.setdefault(owner_path, tuple(_own_shapes(owner)))
        if isinstance(tensor, torch.nn.Parameter):
            setattr(
                owner, leaf, torch.nn.Parameter(data.clone(), requires_grad=tensor.requires_grad)
            )
        else:
            owner._buffers[leaf] = data.clone()
    for path, old_weight_shape in touched.items():
        _fix_attributes(owners[path], old_weight_shape)
    return pruned


def _kept_indices(
    mapping: GroupMapping, removed: dict[int, np.ndarray], module: Any
) -> dict[str, dict[int, np.ndarray]]:
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    dropped: dict[str, dict[int, set[int]]] = {}
    for mapped in mapping.mapped:
        channels = removed.get(mapped.group_id)
        if channels is None or len(channels) == 0:
            continue
        for item in mapped.slices:
            positions = item.positions[np.isin(item.channel_index, channels)]
            dropped.setdefault(item.name, {}).setdefault(item.axis, set()).update(
                positions.tolist()
            )
    kept: dict[str, dict[int, np.ndarray]] = {}
    for name, axes in dropped.items():
        size = tensors[name].shape
        kept[name] = {a: np.setdiff1d(np.arange(size[a]), sorted(p)) for a, p in axes.items()}
    return kept


def _own_shapes(owner: Any) -> tuple[int, ...]:
    weight = getattr(owner, "weight", None)
    return tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()


def _fix_attributes(owner: Any, old_weight_shape: tuple[int, ...]) -> None:
    if isinstance(owner, torch.nn.modules.conv._ConvNd):
        out_channels, per_group = owner.weight.shape[:2]
        depthwise = owner.groups > 1 and owner.groups == owner.in_channels == old_weight_shape[0]
        if depthwise:
            owner.groups = owner.in_channels = out_channels
        elif owner.groups > 1 and tuple(owner.weight.shape) != old_weight_shape:
            raise ValueError(f"cannot prune grouped convolution {owner} (groups={owner.groups})")
        else:
            owner.in_channels = per_group * owner.groups
        owner.out_channels = out_channels
    elif isinstance(owner, torch.nn.Linear):
        owner.out_features, owner.in_features = owner.weight.shape
    elif isinstance(owner, torch.nn.modules.batchnorm._BatchNorm):
        reference = owner.weight if owner.weight is not None else owner.running_mean
        owner.num_features = int(reference.shape[0])
