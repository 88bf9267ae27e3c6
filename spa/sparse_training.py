"""Structured-sparse training in three lines: map the groups, train with HESSO, cut the subnet.

Usage inside an existing training loop::

    sparse = SparseTraining(model, (example_batch,))
    optimizer = sparse.hesso(lr=0.1, target_group_sparsity=0.5, pruning_steps=1000)
    ...  # the usual loop: loss.backward(); optimizer.step(); optimizer.zero_grad()
    subnet = sparse.construct_subnet()  # subnet.onnx (onnx-ir model), subnet.module (torch)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from spa.channel_layout import ChannelLayout
from spa.cric import CRIC, probe_loss
from spa.group_mapping import GroupMapping, map_groups
from spa.hesso import HESSO
from spa.subnet import Subnet, construct_subnet


class SparseTraining:
    """One module's groups (from its ONNX export) and the optimizer and subnet built on them.

    Args:
        module: The model to train; it is trained in place.
        example_inputs: Positional inputs for the ONNX export (a batch of any size).
        exclude: Globs of node, value or parameter names whose groups stay dense.
    """

    def __init__(
        self, module: Any, example_inputs: tuple[Any, ...], *, exclude: Sequence[str] = ()
    ) -> None:
        self.module = module
        self.example_inputs = tuple(example_inputs)
        self.exclude = tuple(exclude)
        was_training = module.training
        self.mapping: GroupMapping = map_groups(module, self.example_inputs, exclude=self.exclude)
        module.train(was_training)
        self.layout = ChannelLayout(module, self.mapping)

    def hesso(self, **options: Any) -> HESSO:
        """A HESSO optimizer over all of the module's parameters (options as in ``HESSO``)."""
        return HESSO(self.module.parameters(), self.layout, **options)

    def cric(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **options: Any,
    ) -> CRIC:
        """A CRIC corrector probing the loss on one fixed batch; pass it as ``hesso(cric=...)``."""
        return CRIC(probe_loss(self.module, inputs, targets, loss), **options)

    def construct_subnet(self) -> Subnet:
        """The pruned ONNX model and pruned module equivalent to the trained group-sparse one."""
        was_training = self.module.training
        try:
            return construct_subnet(self.module, self.example_inputs, exclude=self.exclude)
        finally:
            self.module.train(was_training)
