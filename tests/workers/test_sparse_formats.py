"""SparseMatrix is checked once when built and frozen: the kernels trust it on every call."""

from __future__ import annotations

import numpy as np
import pytest

from workers.runtime import kernels
from workers.runtime.sparse_formats import SparseMatrix, pack, to_dense


def _csr_parts() -> dict:
    dense = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]], dtype=np.float32)
    packed = pack(dense, "csr")
    return {
        "shape": (2, 3),
        "block_shape": (1, 1),
        "block_ptr": np.array(packed.block_ptr),
        "block_col": np.array(packed.block_col),
        "values": np.array(packed.values),
    }


def test_packed_arrays_are_read_only_and_the_kernel_still_runs() -> None:
    dense = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]], dtype=np.float32)
    packed = pack(dense, "csr")
    for array in (packed.block_ptr, packed.block_col, packed.values):
        assert not array.flags.writeable
        assert array.flags.c_contiguous
    with pytest.raises(ValueError):
        packed.values[0] = 5.0
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_allclose(kernels.spmm(packed, x), dense @ x)


def test_a_callers_writeable_arrays_are_copied_not_frozen() -> None:
    parts = _csr_parts()
    caller_values = parts["values"]
    matrix = SparseMatrix(**parts)
    assert caller_values.flags.writeable  # the caller's array is untouched
    caller_values[:] = 0.0  # and writing to it does not reach the matrix
    np.testing.assert_array_equal(to_dense(matrix), [[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])


def test_int64_offsets_are_converted_to_int32() -> None:
    parts = _csr_parts()
    parts["block_ptr"] = parts["block_ptr"].astype(np.int64)
    parts["block_col"] = parts["block_col"].astype(np.int64)
    matrix = SparseMatrix(**parts)
    assert matrix.block_ptr.dtype == np.int32 and matrix.block_col.dtype == np.int32
    assert matrix.block_ptr.tolist() == [0, 2, 3]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("block_col", np.array([0, 3, 2]), r"block columns must lie in 0\.\.2, got 0\.\.3"),
        ("block_col", np.array([-1, 2, 2]), r"block columns must lie in 0\.\.2, got -1\.\.2"),
        ("block_ptr", np.array([0, 3, 2]), "must start at 0 and never decrease"),
        ("block_ptr", np.array([1, 2, 3]), "must start at 0 and never decrease"),
        ("block_ptr", np.array([0, 3]), r"block_ptr needs 3 offsets, got \(2,\)"),
        ("values", np.array([1.0, 2.0]), "3 blocks need 3 columns and 3 values, got 3 and 2"),
        ("values", np.ones((3, 1)), "values must be 1-D"),
        ("block_col", np.array([0.0, 2.0, 2.0]), "block_col must be int32, got float64"),
        ("block_shape", (0, 1), "invalid shape"),
    ],
)
def test_a_broken_structure_is_refused_with_the_field_named(field, value, message) -> None:
    parts = _csr_parts()
    parts[field] = value
    with pytest.raises(ValueError, match=message):
        SparseMatrix(**parts)


def test_block_formats_are_checked_against_their_block_width() -> None:
    dense = np.zeros((4, 8), dtype=np.float32)
    dense[:, 6:8] = 1.0
    packed = pack(dense, "4x4")
    assert packed.block_col.tolist() == [4]  # the edge block starts at cols - 4
    with pytest.raises(ValueError, match=r"0\.\.4, got 5\.\.5"):
        SparseMatrix(
            shape=(4, 8),
            block_shape=(4, 4),
            block_ptr=np.array([0, 1]),
            block_col=np.array([5]),
            values=np.array(packed.values),
        )
