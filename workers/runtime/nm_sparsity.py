"""N:M structured sparsity (2:4 and friends): masks, the compressed form GPUs use, a CPU path.

On GPUs with sparse tensor cores, 2:4 halves the weight reads and MACs (see ``bench/gpu_nm.py``).
CPUs have no such instruction, so on CPU an N:M matrix runs as what it is: a CSR matrix of
density N/M, through the same kernels as unstructured sparsity; at 2:4 (50%) that is below the
CSR break-even (~70%), and the benchmarks report it that way rather than pretending a speed-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.runtime.sparse_formats import SparseMatrix, pack


@dataclass(frozen=True)
class NMMatrix:
    """An N:M sparse matrix in the compressed layout of sparse tensor cores.

    Attributes:
        shape: (rows, cols) of the dense matrix; ``cols`` is a multiple of ``m``.
        n, m: at most ``n`` nonzeros in every group of ``m`` consecutive columns.
        values: float32 (rows, cols // m * n), the kept weights group by group.
        positions: uint8 (rows, cols // m * n), each kept weight's index inside its group.
    """

    shape: tuple[int, int]
    n: int
    m: int
    values: np.ndarray
    positions: np.ndarray

    @property
    def density(self) -> float:
        """Fraction of dense MACs that remain: n / m."""
        return self.n / self.m


def nm_mask(weight: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """Boolean mask keeping the ``n`` largest-magnitude entries of every ``m`` along axis 1.

    Args:
        weight: (rows, cols) with cols a multiple of m (conv weights: reshape to (Cout, -1)
            with input channels innermost groups, or transpose so groups run along Cin).
        n, m: the pattern, 2 and 4 for sparse tensor cores.

    Returns:
        Mask of ``weight.shape``; ties keep the lower column index.
    """
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"{n}:{m} sparsity needs columns divisible by {m}, got {cols}")
    groups = np.abs(np.asarray(weight, dtype=np.float32)).reshape(rows, cols // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")[..., :n]
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask.reshape(rows, cols)


def is_nm(weight: np.ndarray, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive columns has at most ``n`` nonzeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    return bool(np.all(np.count_nonzero(weight.reshape(rows, cols // m, m), axis=-1) <= n))


def pack_nm(weight: np.ndarray, n: int = 2, m: int = 4) -> NMMatrix:
    """Compress a matrix that already satisfies N:M (apply :func:`nm_mask` first).

    Groups with fewer than ``n`` nonzeros store explicit zeros, as the hardware format does.
    """
    dense = np.asarray(weight, dtype=np.float32)
    if not is_nm(dense, n, m):
        raise ValueError(f"matrix is not {n}:{m} sparse; multiply it by nm_mask() first")
    rows, cols = dense.shape
    groups = dense.reshape(rows, cols // m, m)
    # Nonzeros first (stable, so in column order), then zeros to fill the n slots.
    positions = np.argsort(groups == 0, axis=-1, kind="stable")[..., :n]
    positions.sort(axis=-1)
    values = np.take_along_axis(groups, positions, axis=-1)
    return NMMatrix(
        shape=(rows, cols),
        n=n,
        m=m,
        values=values.reshape(rows, -1),
        positions=positions.reshape(rows, -1).astype(np.uint8),
    )


def nm_to_dense(matrix: NMMatrix) -> np.ndarray:
    """Expand the compressed form back to a dense float32 matrix."""
    rows, cols = matrix.shape
    groups = np.zeros((rows, cols // matrix.m, matrix.m), dtype=np.float32)
    values = matrix.values.reshape(rows, -1, matrix.n)
    positions = matrix.positions.reshape(rows, -1, matrix.n).astype(np.intp)
    np.put_along_axis(groups, positions, values, axis=-1)
    return groups.reshape(rows, cols)


def nm_to_cpu_format(matrix: NMMatrix, fmt: str = "csr") -> SparseMatrix:
    """The CPU execution form of an N:M matrix: a CSR (or block) matrix for the C kernels."""
    return pack(nm_to_dense(matrix), fmt)
