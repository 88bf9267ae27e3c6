"""Reference architectures of the harness, for 1-D signals or 2-D images (``dims``).

Small on purpose: at these widths removing half the MACs costs accuracy, so criteria separate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _layers(dims: int) -> tuple[type[nn.Module], type[nn.Module]]:
    if dims == 1:
        return nn.Conv1d, nn.BatchNorm1d
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d
    raise ValueError(f"harness models take 1-D or 2-D inputs, got dims={dims}")


class BasicBlock(nn.Module):
    """ResNet basic block with a projection shortcut when the shape changes."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        conv, norm = _layers(dims)
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem + three stages of one or two basic blocks (widths 16/32/64), global pool, linear head."""

    def __init__(self, dims: int, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        conv, norm = _layers(dims)
        self.stem = nn.Sequential(
            conv(1, widths[0], 3, 1, 1, bias=False), norm(widths[0]), nn.ReLU()
        )
        blocks, cin = [], widths[0]
        for index, width in enumerate(widths):
            blocks.append(BasicBlock(dims, cin, width, 1 if index == 0 else 2))
            cin = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise 3x3, 1x1 project (residual when shapes agree)."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        conv, norm = _layers(dims)
        hidden = cin * expand
        self.expand = nn.Sequential(conv(cin, hidden, 1, bias=False), norm(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(
            conv(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), norm(hidden), nn.ReLU6()
        )
        self.project = nn.Sequential(conv(hidden, cout, 1, bias=False), norm(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class MobileNetLike(nn.Module):
    """Stem, inverted residual blocks with depthwise convs, 1x1 head conv, pool, linear."""

    def __init__(self, dims: int, num_classes: int) -> None:
        super().__init__()
        conv, norm = _layers(dims)
        self.stem = nn.Sequential(conv(1, 16, 3, 1, 1, bias=False), norm(16), nn.ReLU6())
        config = [(16, 16, 1), (16, 24, 2), (24, 24, 1), (24, 32, 2), (32, 32, 1)]
        self.blocks = nn.Sequential(*(InvertedResidual(dims, a, b, s, 3) for a, b, s in config))
        self.head = nn.Sequential(conv(32, 96, 1, bias=False), norm(96), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.head(self.blocks(self.stem(x)))), 1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention = torch.softmax(q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5, dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class SmallViT(nn.Module):
    """Conv patch embedding (+ conv stem), learned positions, encoder blocks, mean-pooled head."""

    def __init__(
        self, dims: int, num_classes: int, tokens: int, patch: int, dim: int = 48, depth: int = 2
    ) -> None:
        super().__init__()
        conv, norm = _layers(dims)
        self.stem = nn.Sequential(conv(1, 24, 3, 1, 1, bias=False), norm(24), nn.ReLU())
        self.embed = conv(24, dim, patch, patch)
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*(EncoderBlock(dim, 4, dim * 2) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(self.stem(x)).flatten(2).transpose(1, 2) + self.position
        return self.fc(self.norm(self.blocks(tokens)).mean(dim=1))


def _vit(dims: int, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    patch = 4
    tokens = 1
    for size in input_shape[1:]:
        tokens *= size // patch
    return SmallViT(dims, num_classes, tokens, patch)


HARNESS_MODELS: dict[str, Callable[[int, int, tuple[int, ...]], nn.Module]] = {
    "resnet": lambda dims, classes, shape: SmallResNet(dims, classes),
    "mobilenet": lambda dims, classes, shape: MobileNetLike(dims, classes),
    "vit": _vit,
}


def build_model(
    architecture: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0
) -> Any:
    """A freshly initialised harness model for samples of ``input_shape`` (channels first)."""
    if architecture not in HARNESS_MODELS:
        raise ValueError(
            f"unknown harness model {architecture!r}; choose from {sorted(HARNESS_MODELS)}"
        )
    torch.manual_seed(seed)
    return HARNESS_MODELS[architecture](len(input_shape) - 1, num_classes, input_shape)
