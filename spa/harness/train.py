"""Deterministic training of the harness models, cached as checkpoints outside git."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spa.harness.data import Dataset, load_dataset
from spa.harness.evaluate import accuracy_torch
from spa.harness.models import build_model

logger = logging.getLogger(__name__)

#: Epochs per architecture: enough to converge on these small sets on two shared cores.
EPOCHS = {"resnet": 12, "mobilenet": 15, "vit": 25}


def default_cache_dir() -> Path:
    """``$SPARSEARCH_CACHE`` or ``~/.cache/sparsearch``, plus ``harness``."""
    root = os.environ.get("SPARSEARCH_CACHE") or Path.home() / ".cache" / "sparsearch"
    return Path(root) / "harness"


def train_model(
    module: Any,
    dataset: Dataset,
    epochs: int,
    *,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    masks: dict[str, Any] | None = None,
) -> Any:
    """Train ``module`` in place with AdamW and a cosine schedule; returns it in eval mode.

    Args:
        masks: Parameter name -> 0/1 tensor re-applied after every step (fine-tuning a pruned
            model as its zeroed dense equivalent: removed channels stay exactly zero).
    """
    import torch

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    x = torch.from_numpy(dataset.x_train)
    y = torch.from_numpy(dataset.y_train)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=max(steps, 1))
    parameters = dict(module.named_parameters())
    for _ in range(epochs):
        module.train()
        order = torch.from_numpy(generator.permutation(len(x)))
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(module(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if masks:
                with torch.no_grad():
                    for name, mask in masks.items():
                        parameters[name].mul_(mask)
    return module.eval()


@dataclass
class HarnessCase:
    """A trained reference model with its dataset and its test accuracy (percent)."""

    name: str
    architecture: str
    dataset: Dataset
    module: Any
    accuracy: float


def load_case(
    architecture: str, dataset_name: str, *, cache_dir: str | os.PathLike[str] | None = None
) -> HarnessCase:
    """The trained ``architecture`` on ``dataset_name``: from the cache, else trained and cached."""
    import torch

    torch.set_num_threads(1)
    dataset = load_dataset(dataset_name)
    module = build_model(architecture, dataset.input_shape, dataset.num_classes)
    name = f"{architecture}-{dataset_name}"
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    checkpoint = path / f"{name}.pt"
    if checkpoint.exists():
        module.load_state_dict(torch.load(checkpoint, weights_only=True))
        module.eval()
    else:
        logger.info("training %s for %d epochs", name, EPOCHS[architecture])
        train_model(module, dataset, EPOCHS[architecture])
        path.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), checkpoint)
    return HarnessCase(
        name, architecture, dataset, module, accuracy_torch(module, dataset.x_test, dataset.y_test)
    )
