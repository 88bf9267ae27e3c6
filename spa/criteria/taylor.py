"""First-order Taylor importance: the loss change when a channel's parameters are zeroed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnx_graph.groups import GroupSet, PruningGroup
from spa.importance import ImportanceCriterion, register_criterion
from spa.torch_bridge import onnx_gradients, parameter_sources


@register_criterion("taylor")
class TaylorCriterion(ImportanceCriterion):
    """|sum over the group's parameters of w * dL/dw| per channel (Molchanov et al., group form).

    Gradients come from the PyTorch module the ONNX graph was exported from: initializer names
    map back to parameter names (``spa.torch_bridge.parameter_sources``), weights and gradients
    are both taken from the module so BN folding cannot mismatch them.

    Args:
        module: The ``torch.nn.Module`` the graph was exported from.
        data: ``(inputs, labels)`` numpy arrays (a few hundred samples suffice).
        batch_size: Samples per backward pass.
    """

    needs_data = True

    def __init__(
        self, module: Any = None, data: Sequence[np.ndarray] | None = None, batch_size: int = 128
    ) -> None:
        if module is None or data is None:
            raise ValueError(
                "the taylor criterion needs module= (the PyTorch model) and data=(inputs, labels)"
            )
        self.module, self.data, self.batch_size = module, data, batch_size
        self._products: dict[str, np.ndarray] = {}

    def prepare(self, model: ir.Model, groups: GroupSet) -> None:
        import torch

        inputs, labels = self.data
        batches = [
            (
                torch.from_numpy(np.asarray(inputs[s : s + self.batch_size])),
                torch.from_numpy(np.asarray(labels[s : s + self.batch_size])),
            )
            for s in range(0, len(inputs), self.batch_size)
        ]
        gradients = onnx_gradients(model, self.module, batches)
        tensors = dict(self.module.named_parameters())
        self._products = {}
        for onnx_name, (name, perm) in parameter_sources(model, self.module).items():
            if onnx_name in gradients and name in tensors:
                weight = tensors[name].detach().numpy().astype(np.float64)
                weight = weight if perm is None else np.transpose(weight, perm)
                self._products[onnx_name] = weight * gradients[onnx_name]

    def score(self, model: ir.Model, group: PruningGroup) -> np.ndarray:
        if not self._products:
            self.prepare(model, GroupSet([], np.zeros(0), np.zeros(0), np.zeros(0), []))
        total = np.zeros(group.num_channels)
        for member in group.parameters:
            product = self._products.get(member.value_name)
            if product is None:
                continue
            per_position = (
                np.moveaxis(product, member.axis, 0)
                .reshape(product.shape[member.axis], -1)
                .sum(axis=1)
            )
            total += np.bincount(
                member.channel_index,
                weights=per_position[member.positions],
                minlength=group.num_channels,
            )
        return np.abs(total)
