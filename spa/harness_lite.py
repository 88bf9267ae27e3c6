"""A small accuracy harness: offline datasets, compact models and a plain training loop.

Datasets ship with installed packages (nothing is downloaded): scikit-learn's digits upscaled to
16x16, and mnist1d generated offline. Models are small enough to train in seconds on one core
yet have the structures pruning must handle: residual additions with BatchNorm, depthwise
separable blocks, and a Flatten feeding a Linear.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class Dataset:
    """Train and test tensors of one classification task."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled training batches."""
        order = torch.randperm(len(self.y_train), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield self.x_train[index], self.y_train[index]


def digits(size: int = 16, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits, bilinearly upscaled to ``size`` x ``size``; 80/20 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(labels))
    train, test = order[:split], order[split:]
    return Dataset(f"digits{size}", images[train], labels[train], images[test], labels[test])


def mnist1d() -> Dataset:
    """mnist1d generated offline (4000 train / 1000 test sequences of length 40)."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    as_x = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32).unsqueeze(1)  # noqa: E731
    as_y = lambda a: torch.tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return Dataset(
        "mnist1d", as_x(data["x"]), as_y(data["y"]), as_x(data["x_test"]), as_y(data["y_test"])
    )


def _conv_bn(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.first = _conv_bn(cin, cout, 3, stride)
        self.second = _conv_bn(cout, cout, 3)
        self.shortcut = (
            _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.second(F.relu(self.first(x))) + self.shortcut(x))


class DigitsResNet(nn.Module):
    """A small ResNet for 1-channel 16x16 images."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(1, width)
        self.layer1 = ResidualBlock(width, width)
        self.layer2 = ResidualBlock(width, 2 * width, stride=2)
        self.layer3 = ResidualBlock(2 * width, 2 * width)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(F.relu(self.stem(x)))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DigitsMobileNet(nn.Module):
    """Depthwise-separable blocks (depthwise 3x3 + pointwise 1x1, each with BN) for 16x16 images."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(1, width), nn.ReLU()]
        channels = width
        for out, stride in ((2 * width, 1), (4 * width, 2), (4 * width, 1)):
            layers += [_conv_bn(channels, channels, 3, stride, groups=channels), nn.ReLU()]
            layers += [_conv_bn(channels, out, 1), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class Conv1DNet(nn.Module):
    """1-D conv net for mnist1d; its last conv feeds a Linear through Flatten."""

    def __init__(self, width: int = 32, length: int = 40, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
        )
        self.head = nn.Linear(width * math.ceil(length / 4), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


HARNESS: dict[str, tuple[Callable[[], Dataset], Callable[[], nn.Module]]] = {
    "digits_resnet": (digits, DigitsResNet),
    "digits_mobilenet": (digits, DigitsMobileNet),
    "mnist1d_conv": (mnist1d, Conv1DNet),
}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy in percent (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        return 100.0 * float((model(x).argmax(1) == y).float().mean())


def train(
    model: nn.Module,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
    on_step: Callable[[int], Any] | None = None,
) -> None:
    """Cross-entropy training with a cosine learning-rate schedule over ``epochs``."""
    steps = epochs * math.ceil(len(data.y_train) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        model.train()
        for x, y in data.batches(batch_size, generator):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if on_step is not None:
                on_step(step)


def steps_per_epoch(data: Dataset, batch_size: int = 64) -> int:
    return math.ceil(len(data.y_train) / batch_size)
