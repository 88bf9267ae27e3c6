"""Slicing kept channels out of initializers: the one-gather path equals successive takes."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_graph.surgery import _kept_slices


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((6, 5, 3, 3), (0, 1)),  # conv weight: output and input channels
        ((4, 6, 5), (1, 2)),
        ((7, 8), (1, 0)),  # cuts listed out of axis order
        ((3, 4, 5, 6), (2, 3)),
        ((5, 6, 7), (0, 2)),  # not neighbours: successive takes
        ((9, 4), (0,)),
        ((2, 3, 4), (0, 1, 2)),
    ],
)
def test_kept_slices_equal_successive_takes(shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    array = rng.standard_normal(shape).astype(np.float32)
    cuts = [
        (axis, np.sort(rng.choice(shape[axis], max(1, shape[axis] // 2), replace=False)))
        for axis in axes
    ]
    expected = array
    for axis, positions in cuts:
        expected = np.take(expected, positions, axis=axis)
    found = _kept_slices(array, cuts)
    assert found.shape == expected.shape
    np.testing.assert_array_equal(found, expected)
    assert not np.shares_memory(found, array)
