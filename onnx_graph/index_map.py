"""Tiny index remaps between two channel axes: which position of one axis is which of the other.

A map relates positions of a *source* axis to positions of a *target* axis as pairs of index arrays.
The analysis unions the paired channels, so ``reverse`` is simply the swapped pairing. Many-to-one
maps (a flattened ``C*H*W`` axis onto ``C``) mean "these positions live and die together".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class IndexMap:
    """Base class: ``pairs()`` returns (source positions, target positions), equal length."""

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def reverse(self) -> IndexMap:
        source, target = self.pairs()
        return ExplicitMap(target, source)


@dataclass(frozen=True)
class ExplicitMap(IndexMap):
    """Arbitrary pairing given as two index arrays."""

    source: np.ndarray
    target: np.ndarray

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.source, self.target


@dataclass(frozen=True)
class Identity(IndexMap):
    """Position i of the source is position i of the target (elementwise ops, BatchNorm, ...)."""

    size: int

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        index = np.arange(self.size, dtype=np.int64)
        return index, index


@dataclass(frozen=True)
class Offset(IndexMap):
    """Source position i is target position ``start + i * step`` (Concat inputs, Split, Slice)."""

    size: int
    start: int
    step: int = 1

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        index = np.arange(self.size, dtype=np.int64)
        return index, self.start + index * self.step


@dataclass(frozen=True)
class Stride(IndexMap):
    """Source position i is target position ``(i // stride) % target_size`` (reshape blocks).

    A source axis that is the row-major flattening of several axes maps onto one of them this way;
    ``stride`` is the product of the sizes of the axes inside the chosen one.
    """

    size: int
    stride: int
    target_size: int

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        index = np.arange(self.size, dtype=np.int64)
        return index, (index // self.stride) % self.target_size
