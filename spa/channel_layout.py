"""Per-channel views of a module's parameters: reduce, scale and zero whole channels at once.

A mapped group's channel is spread over slices of several tensors (a Conv's output filters, the
BN weight and bias, the next layer's input slices). ``ChannelLayout`` numbers the channels of all
mapped groups globally (0..N-1) and offers the three operations structured-sparse training needs:
sums over each channel's elements, multiplying each channel by a factor, and setting channels to
exact zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spa.group_mapping import GroupMapping


@dataclass
class _Slot:
    """One parameter's positions along one axis, with the global channel of each position."""

    name: str
    parameter: torch.nn.Parameter
    axis: int
    positions: torch.Tensor
    channel: torch.Tensor

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """The slot's slices of ``tensor`` (same shape as the parameter) as [positions, -1]."""
        return tensor.movedim(self.axis, 0)[self.positions].reshape(len(self.positions), -1)


class ChannelLayout:
    """Global channel numbering over the mapped groups of one module (parameters only).

    Args:
        module: The live module the mapping was made for.
        mapping: Its group mapping; buffers (running statistics) are not trained and left out.
    """

    def __init__(self, module: Any, mapping: GroupMapping) -> None:
        parameters = dict(module.named_parameters())
        self.mapping = mapping
        offsets = np.concatenate([[0], np.cumsum([g.num_channels for g in mapping.mapped])])
        self.group_offsets = offsets.astype(np.int64)
        self.num_channels = int(offsets[-1])
        self.channel_group = np.repeat(np.arange(len(mapping.mapped)), np.diff(offsets))
        self.slots: list[_Slot] = []
        for index, group in enumerate(mapping.mapped):
            for item in group.parameter_slices:
                parameter = parameters[item.name]
                channel = torch.as_tensor(item.channel_index + offsets[index], dtype=torch.long)
                # A copy: the positions array is read-only, and torch warns on a shared view.
                positions = torch.tensor(item.positions, dtype=torch.long)
                self.slots.append(_Slot(item.name, parameter, item.axis, positions, channel))
        self.parameter_names = sorted({slot.name for slot in self.slots})
        self.channel_numel = self.reduce(lambda rows, _: torch.full_like(rows[:, 0], rows.shape[1]))

    def reduce(self, per_rows: Callable[[torch.Tensor, _Slot], torch.Tensor]) -> torch.Tensor:
        """Per-channel sum of ``per_rows(rows, slot)`` (one value per position) over all slots.

        ``rows`` is the slot's [positions, elements] view of the parameter values; the callable
        reads gradients or optimizer state of the same slices with ``slot.rows(tensor)``.
        """
        total = torch.zeros(self.num_channels, dtype=torch.float64)
        for slot in self.slots:
            rows = slot.rows(slot.parameter.detach())
            total.index_add_(0, slot.channel, per_rows(rows, slot).detach().double().cpu())
        return total

    def squared_norms(self) -> torch.Tensor:
        """Sum of squares of every channel's elements."""
        return self.reduce(lambda rows, _: rows.square().sum(1))

    def scale_(self, factors: torch.Tensor) -> None:
        """Multiply every channel's elements by ``factors[channel]`` (in place)."""
        factors = factors.to(torch.float64)
        with torch.no_grad():
            for slot in self.slots:
                view = slot.parameter.data.movedim(slot.axis, 0)
                shape = (-1,) + (1,) * (view.dim() - 1)
                factor = factors[slot.channel].to(device=view.device, dtype=view.dtype).view(shape)
                view[slot.positions] = view[slot.positions] * factor

    def zero_(self, channels: torch.Tensor) -> None:
        """Set the elements of the channels in the boolean mask ``channels`` to exact zero."""
        if not bool(channels.any()):
            return
        with torch.no_grad():
            for slot in self.slots:
                hit = channels[slot.channel]
                if bool(hit.any()):
                    slot.parameter.data.movedim(slot.axis, 0)[slot.positions[hit]] = 0.0

    def snapshot(self, channels: torch.Tensor) -> list[tuple[_Slot, torch.Tensor, torch.Tensor]]:
        """Copies of the channels' current values, for ``restore`` (a rollback)."""
        saved = []
        for slot in self.slots:
            positions = slot.positions[channels[slot.channel]]
            if len(positions):
                values = slot.parameter.data.movedim(slot.axis, 0)[positions].clone()
                saved.append((slot, positions, values))
        return saved

    @staticmethod
    def restore(saved: list[tuple[_Slot, torch.Tensor, torch.Tensor]]) -> None:
        """Write back values taken by ``snapshot``."""
        with torch.no_grad():
            for slot, positions, values in saved:
                slot.parameter.data.movedim(slot.axis, 0)[positions] = values

    def zero_channels(self) -> torch.Tensor:
        """Boolean mask of channels whose every element is exactly zero."""
        return self.squared_norms() == 0

    def group_channels(self, index: int) -> slice:
        """Global channel range of the ``index``-th mapped group."""
        return slice(int(self.group_offsets[index]), int(self.group_offsets[index + 1]))
