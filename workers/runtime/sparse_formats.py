"""Packing dense weight matrices into the sparse formats the C kernels run: CSR and R x C blocks.

A zero in the dense matrix is a pruned weight; packing never drops a nonzero, so running the
packed matrix equals running the dense-with-zeros one up to float summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Format name -> (block rows, block columns). CSR is the 1 x 1 block case.
BLOCK_SHAPES: dict[str, tuple[int, int]] = {
    "csr": (1, 1),
    "4x1": (4, 1),
    "8x1": (8, 1),
    "4x4": (4, 4),
}


@dataclass(frozen=True)
class SparseMatrix:
    """A float32 matrix of shape (rows, cols) stored as a CSR of R x C blocks.

    Attributes:
        shape: (rows, cols) of the dense matrix.
        block_shape: (R, C); (1, 1) is plain CSR.
        block_ptr: int32, ceil(rows / R) + 1 offsets into ``block_col``.
        block_col: int32, the first dense column of each stored block (blocks at the right edge
            are shifted left so they never read past ``cols``).
        values: float32, R * C values per block, column-major inside a block so the kernel
            reads the R weights that share one input row together.
    """

    shape: tuple[int, int]
    block_shape: tuple[int, int]
    block_ptr: np.ndarray
    block_col: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        """Check the structure once and freeze the arrays.

        The kernels index X by ``block_col`` and walk ``block_ptr`` without checking them on
        every call (on a 1024 x 1024 layer at 90% that check cost ~25 us, 7-10% of the call and
        all of it serial), so a matrix must be valid from the start and stay so: the arrays are
        stored as C-contiguous int32/float32 and made read-only.
        """
        rows, cols = (int(v) for v in self.shape)
        br, bc = (int(v) for v in self.block_shape)
        if rows < 0 or cols < 0 or br < 1 or bc < 1:
            raise ValueError(
                f"SparseMatrix: invalid shape {self.shape} or blocks {self.block_shape}"
            )
        block_ptr = _frozen(self.block_ptr, np.int32, "block_ptr")
        block_col = _frozen(self.block_col, np.int32, "block_col")
        values = _frozen(self.values, np.float32, "values")
        row_blocks = -(-rows // br)
        if block_ptr.shape != (row_blocks + 1,):
            raise ValueError(
                f"SparseMatrix: block_ptr needs {row_blocks + 1} offsets, got {block_ptr.shape}"
            )
        if block_ptr[0] != 0 or np.any(np.diff(block_ptr) < 0):
            raise ValueError("SparseMatrix: block_ptr must start at 0 and never decrease")
        blocks = int(block_ptr[-1])
        if block_col.shape != (blocks,) or values.shape != (blocks * br * bc,):
            raise ValueError(
                f"SparseMatrix: {blocks} blocks need {blocks} columns and {blocks * br * bc} "
                f"values, got {block_col.size} and {values.size}"
            )
        if blocks and (int(block_col.min()) < 0 or int(block_col.max()) > cols - bc):
            raise ValueError(
                f"SparseMatrix: block columns must lie in 0..{cols - bc}, got "
                f"{int(block_col.min())}..{int(block_col.max())}"
            )
        object.__setattr__(self, "shape", (rows, cols))
        object.__setattr__(self, "block_shape", (br, bc))
        object.__setattr__(self, "block_ptr", block_ptr)
        object.__setattr__(self, "block_col", block_col)
        object.__setattr__(self, "values", values)

    @property
    def format(self) -> str:
        """The format name ("csr", "4x1", ...)."""
        for name, shape in BLOCK_SHAPES.items():
            if shape == self.block_shape:
                return name
        return f"{self.block_shape[0]}x{self.block_shape[1]}"

    @property
    def stored_values(self) -> int:
        """Number of stored weights, including zeros that fill partly used blocks."""
        return int(self.values.size)

    @property
    def density(self) -> float:
        """Stored values over dense size: the fraction of dense MACs the kernel performs."""
        rows, cols = self.shape
        return self.stored_values / max(rows * cols, 1)


def _frozen(array: np.ndarray, dtype: type, field: str) -> np.ndarray:
    """``array`` as a 1-D C-contiguous array of ``dtype`` that nobody writes through.

    A writeable input is copied (once, when the matrix is built), so the caller keeps its
    array and the matrix its own read-only one; a read-only contiguous input of the right
    dtype is kept as it is.
    """
    data = np.asarray(array)
    if data.ndim != 1:
        raise ValueError(f"SparseMatrix: {field} must be 1-D, got shape {data.shape}")
    if data.dtype != dtype and not np.can_cast(data.dtype, dtype, casting="same_kind"):
        raise ValueError(f"SparseMatrix: {field} must be {np.dtype(dtype)}, got {data.dtype}")
    if data.dtype != dtype or data.flags.writeable or not data.flags.c_contiguous:
        data = np.array(data, dtype=dtype, order="C")
        data.flags.writeable = False
    return data


def pack(dense: np.ndarray, fmt: str = "csr") -> SparseMatrix:
    """Pack a 2-D dense matrix into a named format.

    Args:
        dense: (rows, cols) weights; exact zeros are the pruned entries.
        fmt: one of ``BLOCK_SHAPES`` ("csr", "4x1", "8x1", "4x4").

    Returns:
        The packed matrix; ``to_dense(pack(w, f))`` equals ``w``.
    """
    if fmt not in BLOCK_SHAPES:
        raise ValueError(f"unknown sparse format {fmt!r}; known: {sorted(BLOCK_SHAPES)}")
    return pack_blocks(dense, BLOCK_SHAPES[fmt])


def pack_blocks(dense: np.ndarray, block_shape: tuple[int, int]) -> SparseMatrix:
    """Pack into R x C blocks; a block is stored when any of its entries is nonzero.

    Args:
        dense: (rows, cols) weights.
        block_shape: (R, C). Rows are padded to a multiple of R (padding rows are never
            written); a block column that would pass ``cols`` is shifted left, so ``cols >= C``.

    Returns:
        The packed matrix.
    """
    weights = np.asarray(dense, dtype=np.float32)
    if weights.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {weights.shape}")
    rows, cols = weights.shape
    br, bc = block_shape
    if cols < bc and rows * cols > 0:
        raise ValueError(f"{br}x{bc} blocks need at least {bc} columns, got {cols}")
    row_blocks, col_blocks = -(-rows // br), -(-cols // bc)
    padded = np.zeros((row_blocks * br, col_blocks * bc), dtype=np.float32)
    padded[:rows, :cols] = weights
    # [row block, col block, C, R]: column-major inside each block.
    tiles = padded.reshape(row_blocks, br, col_blocks, bc).transpose(0, 2, 3, 1)
    keep = np.any(tiles != 0, axis=(2, 3))
    block_rows_idx, block_cols_idx = np.nonzero(keep)
    values = tiles[block_rows_idx, block_cols_idx].copy()
    starts = block_cols_idx * bc
    overflow = starts + bc - cols
    edge = overflow > 0
    if np.any(edge):
        shift = int(overflow[edge][0])
        shifted = np.zeros_like(values[edge])
        shifted[:, shift:, :] = values[edge][:, : bc - shift, :]
        values[edge] = shifted
        starts = np.where(edge, cols - bc, starts)
    counts = np.bincount(block_rows_idx, minlength=row_blocks)
    block_ptr = np.zeros(row_blocks + 1, dtype=np.int32)
    np.cumsum(counts, out=block_ptr[1:])
    arrays = block_ptr, starts.astype(np.int32), np.ascontiguousarray(values.reshape(-1))
    for array in arrays:  # fresh and ours alone: frozen here, SparseMatrix need not copy them
        array.flags.writeable = False
    return SparseMatrix((rows, cols), (br, bc), *arrays)


def to_dense(matrix: SparseMatrix) -> np.ndarray:
    """Unpack to a dense float32 array (for tests and for handing weights back to onnxruntime)."""
    rows, cols = matrix.shape
    br, bc = matrix.block_shape
    dense = np.zeros((-(-rows // br) * br, cols), dtype=np.float32)
    blocks = matrix.values.reshape(-1, bc, br)
    block_row = np.repeat(np.arange(len(matrix.block_ptr) - 1), np.diff(matrix.block_ptr))
    for c in range(bc):
        for r in range(br):
            # Shifted edge blocks may overlap a neighbour, hence add rather than assign.
            np.add.at(dense, (block_row * br + r, matrix.block_col + c), blocks[:, c, r])
    return dense[:rows]


def sparsify(
    dense: np.ndarray, sparsity: float, block_shape: tuple[int, int] = (1, 1)
) -> np.ndarray:
    """Zero the lowest-magnitude R x C blocks so that ``sparsity`` of the blocks are zero.

    Magnitude pruning, used by benchmarks and tests to make sparse weights of a known pattern.

    Args:
        dense: (rows, cols) weights (not modified).
        sparsity: fraction of blocks to zero, in [0, 1].
        block_shape: (R, C); blocks are taken on the zero-padded matrix.

    Returns:
        A float32 copy with the pruned blocks zeroed.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    weights = np.array(dense, dtype=np.float32)
    rows, cols = weights.shape
    br, bc = block_shape
    row_blocks, col_blocks = -(-rows // br), -(-cols // bc)
    padded = np.zeros((row_blocks * br, col_blocks * bc), dtype=np.float32)
    padded[:rows, :cols] = weights
    scores = np.abs(padded).reshape(row_blocks, br, col_blocks, bc).sum(axis=(1, 3))
    n_zero = int(round(sparsity * scores.size))
    if n_zero:
        order = np.argsort(scores, axis=None, kind="stable")[:n_zero]
        mask = np.ones(scores.size, dtype=bool)
        mask[order] = False
        block_mask = np.repeat(np.repeat(mask.reshape(scores.shape), br, 0), bc, 1)
        padded *= block_mask
    return padded[:rows, :cols].copy()
