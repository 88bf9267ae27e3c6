"""N:M masks and the compressed layout round-trip; the CPU form computes the same product."""

from __future__ import annotations

import numpy as np
import pytest

from workers.runtime import kernels
from workers.runtime.nm_sparsity import is_nm, nm_mask, nm_to_cpu_format, nm_to_dense, pack_nm


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("shape", [(1, 8), (5, 16), (32, 64)])
def test_mask_pack_roundtrip(n: int, m: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(shape).astype(np.float32)
    mask = nm_mask(weight, n, m)
    assert np.all(mask.reshape(shape[0], -1, m).sum(-1) == n)
    pruned = weight * mask
    kept = np.abs(pruned).reshape(shape[0], -1, m)
    dropped = np.where(mask, 0, np.abs(weight)).reshape(shape[0], -1, m)
    assert np.all(kept.max(-1) >= dropped.max(-1))  # the largest of each group survives
    assert is_nm(pruned, n, m) and not (n < m and is_nm(weight, n, m))
    packed = pack_nm(pruned, n, m)
    assert packed.values.shape == (shape[0], shape[1] // m * n)
    assert packed.density == n / m
    np.testing.assert_array_equal(nm_to_dense(packed), pruned)


def test_groups_with_fewer_nonzeros_and_bad_input() -> None:
    weight = np.array([[0, 0, 0, 3, 1, 0, 0, 0]], dtype=np.float32)
    packed = pack_nm(weight)
    np.testing.assert_array_equal(nm_to_dense(packed), weight)
    with pytest.raises(ValueError):
        pack_nm(np.ones((2, 8), dtype=np.float32))
    with pytest.raises(ValueError):
        nm_mask(np.ones((2, 6), dtype=np.float32))


def test_cpu_execution_matches_dense() -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((24, 32)).astype(np.float32)
    pruned = weight * nm_mask(weight)
    x = rng.standard_normal((32, 50)).astype(np.float32)
    sparse = nm_to_cpu_format(pack_nm(pruned))
    assert sparse.density == pytest.approx(0.5)
    np.testing.assert_allclose(kernels.spmm(sparse, x, threads=2), pruned @ x, rtol=1e-4, atol=1e-4)
