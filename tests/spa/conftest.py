"""A small trained-looking conv net with BatchNorm, a residual, a depthwise block and an MLP head,
exported with BatchNorm kept, shared by the criterion, OBSPA and allocation suites."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
import torch
from torch import nn

from onnx_graph import GroupSet, analyze
from onnx_graph.testing import randomize_module
from spa.torch_bridge import lower_with_batchnorm


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.expand = nn.Conv2d(8, 16, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn4 = nn.BatchNorm2d(16)
        self.project = nn.Conv2d(16, 12, 1)
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(self.conv1(x)))
        a = torch.relu(a + self.bn2(self.conv2(a)))
        b = torch.relu(self.bn3(self.expand(a)))
        b = torch.relu(self.bn4(self.depthwise(b)))
        c = self.project(b).mean(dim=(2, 3))
        return self.fc2(torch.relu(self.fc1(c)))


@dataclass
class TinyCase:
    module: Any
    model: ir.Model
    groups: GroupSet
    x: np.ndarray
    y: np.ndarray


@pytest.fixture(scope="session")
def tiny_case() -> TinyCase:
    torch.manual_seed(0)
    module = randomize_module(TinyNet(), seed=3).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, size=24).astype(np.int64)
    model = lower_with_batchnorm(module, (torch.from_numpy(x[:2]),))
    return TinyCase(module, model, analyze(model), x, y)


@pytest.fixture(scope="session")
def folded_case(tiny_case: TinyCase) -> TinyCase:
    """The same network exported with ``optimize=True``: BatchNorm folded into the convs."""
    from onnx_graph import lower

    model = lower(tiny_case.module, (torch.from_numpy(tiny_case.x[:2]),))
    return TinyCase(tiny_case.module, model, analyze(model), tiny_case.x, tiny_case.y)


def criterion_options(name: str, case: TinyCase) -> dict[str, Any]:
    """Options a criterion needs to run on the tiny case (data criteria get the module and data)."""
    from spa.importance import criterion_needs_data

    return {"module": case.module, "data": (case.x, case.y)} if criterion_needs_data(name) else {}
