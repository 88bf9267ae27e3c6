"""Datasets that ship inside installed packages (nothing is downloaded): digits and mnist1d."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    """A classification split: float32 inputs [N, 1, *spatial] standardised, int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (channels first)."""
        return tuple(self.x_train.shape[1:])

    @property
    def spatial_dims(self) -> int:
        return len(self.input_shape) - 1


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = float(train.mean()), float(train.std()) + 1e-8
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def _digits(size: int = 32, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 8x8 digits, bilinearly upscaled to ``size`` x ``size``; 40% held out.

    Upscaling makes the nets do real spatial work (strided stages, several pooling levels), which
    keeps the task from being so easy that any pruning criterion survives.
    """
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear")
    x, y = images.numpy(), bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(len(x) * 0.6)
    train, test = order[:split], order[split:]
    x_train, x_test = _standardise(x[train], x[test])
    return Dataset("digits", x_train, y[train], x_test, y[test], 10)


def _mnist1d(seed: int = 0) -> Dataset:
    """mnist1d generated offline by its package (4000 train / 1000 test signals of length 40)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42 + seed
    data = make_dataset(args)
    x_train, x_test = _standardise(
        np.asarray(data["x"])[:, None], np.asarray(data["x_test"])[:, None]
    )
    y_train = np.asarray(data["y"], dtype=np.int64)
    y_test = np.asarray(data["y_test"], dtype=np.int64)
    return Dataset("mnist1d", x_train, y_train, x_test, y_test, 10)


DATASETS: dict[str, Callable[[], Dataset]] = {"digits": _digits, "mnist1d": _mnist1d}
_LOADED: dict[str, Dataset] = {}


def load_dataset(name: str) -> Dataset:
    """The dataset registered as ``name`` (generated once per process)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    if name not in _LOADED:
        _LOADED[name] = DATASETS[name]()
    return _LOADED[name]
