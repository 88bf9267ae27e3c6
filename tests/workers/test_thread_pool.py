"""The kernels' thread pool: results with sleeping and spinning workers, concurrent callers, fork."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from workers.runtime import depthwise_kernels, kernels
from workers.runtime.sparse_formats import BLOCK_SHAPES, pack, sparsify


def _reference(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (w.astype(np.float64) @ x.astype(np.float64)).astype(np.float32)


@pytest.fixture
def restore_spin() -> Iterator[None]:
    before = kernels.set_thread_spin(300)
    yield
    kernels.set_thread_spin(before)


@pytest.mark.parametrize("spin_us", [0, 50, 5000])
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("fmt", ["csr", "4x1", "4x4"])
def test_every_split_matches_dense_whether_workers_sleep_or_spin(
    restore_spin: None, spin_us: int, threads: int, fmt: str
) -> None:
    """Spin 0 makes every call wake sleeping workers (late starters); row and column splits,
    odd sizes, empty rows, more threads than rows."""
    kernels.set_thread_spin(spin_us)
    rng = np.random.default_rng(threads * 100 + spin_us)
    for m, k, n in [(3, 8, 5), (13, 24, 77), (64, 48, 700), (9, 40, 2000)]:
        w = sparsify(rng.standard_normal((m, k)), 0.8, BLOCK_SHAPES[fmt])
        w[1::4] = 0.0
        packed = pack(w, fmt)
        for _ in range(3):  # back to back: workers awake (spin) or asleep (spin 0)
            x = rng.standard_normal((k, n)).astype(np.float32)
            np.testing.assert_allclose(
                kernels.spmm(packed, x, threads=threads), _reference(w, x), atol=1e-4
            )


def test_workers_take_items_of_long_calls_and_the_caller_waits_for_them(
    restore_spin: None,
) -> None:
    """Calls of ~10 ms: the worker gets its core (even on a loaded machine) and takes items while
    the caller works, so a caller that returned before the workers' items were done would give
    wrong results here."""
    rng = np.random.default_rng(9)
    w = sparsify(rng.standard_normal((1024, 512)), 0.5)
    packed = pack(w, "csr")
    x = rng.standard_normal((512, 1200)).astype(np.float32)
    expected = _reference(w, x)
    before = kernels.extension().thread_pool_stats()["worker_items"]
    for _ in range(5):
        y = kernels.spmm(packed, x, threads=2)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-3)
    assert kernels.extension().thread_pool_stats()["worker_items"] > before


def test_depthwise_and_im2col_calls_match_one_thread_with_sleeping_workers(
    restore_spin: None,
) -> None:
    kernels.set_thread_spin(0)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 24, 30, 30)).astype(np.float32)
    weight = rng.standard_normal((24, 1, 3, 3)).astype(np.float32)
    dense = sparsify(rng.standard_normal((16, 24 * 9)), 0.8)
    packed = pack(dense, "csr")

    def both(threads: int) -> tuple[np.ndarray, np.ndarray]:
        depthwise = depthwise_kernels.depthwise_conv2d(
            x, weight, strides=(2, 2), pads=(1, 1, 1, 1), threads=threads
        )
        conv = kernels.sparse_conv2d(x, packed, (3, 3), (2, 2), (1, 1, 1, 1), threads=threads)
        return depthwise, conv

    one = both(1)
    for threads in (2, 3):
        depthwise, conv = both(threads)
        np.testing.assert_array_equal(depthwise, one[0])  # planes split, same arithmetic
        # A share may run strips where one thread ran tiles (summation order differs).
        np.testing.assert_allclose(conv, one[1], rtol=1e-5, atol=1e-5)


def test_concurrent_callers_each_get_their_own_result(restore_spin: None) -> None:
    """Python threads release the GIL in the kernels: one holds the pool, the others run their
    items on their own thread; every result must still be right."""
    rng = np.random.default_rng(11)
    w = sparsify(rng.standard_normal((96, 64)), 0.9)
    packed = pack(w, "csr")
    inputs = [rng.standard_normal((64, 500)).astype(np.float32) for _ in range(4)]
    errors: list[float] = []

    def work(x: np.ndarray) -> None:
        for _ in range(30):
            y = kernels.spmm(packed, x, threads=2)
            errors.append(float(np.abs(y - _reference(w, x)).max()))

    callers = [threading.Thread(target=work, args=(x,)) for x in inputs]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(errors) == 120 and max(errors) < 1e-4


def _spmm_in_child(queue: multiprocessing.Queue) -> None:
    rng = np.random.default_rng(2)
    w = sparsify(rng.standard_normal((40, 32)), 0.7)
    x = rng.standard_normal((32, 900)).astype(np.float32)
    y = kernels.spmm(pack(w, "csr"), x, threads=2)
    queue.put(float(np.abs(y - _reference(w, x)).max()))


def test_forked_child_runs_parallel_calls_without_the_parents_workers() -> None:
    rng = np.random.default_rng(3)
    kernels.spmm(pack(sparsify(rng.standard_normal((40, 32)), 0.7), "csr"),
                 rng.standard_normal((32, 900)).astype(np.float32), threads=2)  # fmt: skip
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_spmm_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) < 1e-4


def test_spin_setting_returns_the_previous_one_and_refuses_negative(restore_spin: None) -> None:
    assert kernels.set_thread_spin(120) == 300
    assert kernels.set_thread_spin(0) == 120
    with pytest.raises(ValueError):
        kernels.set_thread_spin(-1)
