"""Tiny modules for the structured-sparse training tests (random weights, a few hundred params)."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from onnx_graph.testing import randomize_module
from spa.group_mapping import GroupMapping, map_groups
from spa.harness_lite import Conv1DNet, DigitsMobileNet, DigitsResNet


class TokenMLP(nn.Module):
    """Linear layers on 3-D input (exported as MatMul with a pre-transposed weight) and on 2-D."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 5)
        self.head = nn.Linear(5, 7)
        self.out = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.fc2(torch.relu(self.fc1(x)))  # [B, T, 5]
        return self.out(torch.relu(self.head(tokens.mean(1))))


def tiny(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A randomised tiny model and an input batch for it."""
    generator = torch.Generator().manual_seed(seed)
    if name == "resnet":
        model, x = DigitsResNet(width=4), torch.randn(8, 1, 8, 8, generator=generator)
    elif name == "mobilenet":
        model, x = DigitsMobileNet(width=4), torch.randn(8, 1, 8, 8, generator=generator)
    elif name == "conv1d":
        model, x = Conv1DNet(width=4, length=12), torch.randn(8, 1, 12, generator=generator)
    elif name == "mlp":
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        x = torch.randn(8, 6, generator=generator)
    elif name == "mlp3d":
        model, x = TokenMLP(), torch.randn(8, 4, 6, generator=generator)
    else:
        raise ValueError(name)
    return randomize_module(model, seed), x


TINY_MODELS = ("resnet", "mobilenet", "conv1d", "mlp3d", "mlp")


@functools.cache
def _mapped(name: str) -> tuple[nn.Module, torch.Tensor, GroupMapping]:
    model, x = tiny(name)
    return model, x, map_groups(model, (x[:2],))


def tiny_mapped(name: str) -> tuple[nn.Module, torch.Tensor, GroupMapping]:
    """A fresh copy of a tiny model, its input and its (shared, read-only) group mapping.

    The export is the slow part of a test; the mapping holds names only, so it is valid for
    every copy of the module.
    """
    model, x, mapping = _mapped(name)
    return copy.deepcopy(model), x, mapping
