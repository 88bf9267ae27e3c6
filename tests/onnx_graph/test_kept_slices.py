"""Slicing kept channels out of initializers: compiled gather, compaction in place, numpy path."""

from __future__ import annotations

import numpy as np
import pytest

import onnx_graph.kept_slices as kept_module
from onnx_graph.kept_slices import compact_kept, exclusively_owned, kept_slices

CASES = [
    ((6, 5, 3, 3), (0, 1)),  # conv weight: output and input channels
    ((4, 6, 5), (1, 2)),
    ((7, 8), (1, 0)),  # cuts listed out of axis order
    ((3, 4, 5, 6), (2, 3)),
    ((5, 6, 7), (0, 2)),  # not neighbours
    ((9, 4), (0,)),
    ((768, 96), (1,)),  # last axis only: element gather
    ((2, 3, 4), (0, 1, 2)),
    ((3, 1, 4, 2), (2,)),  # uncut axes on both sides
    ((11,), (0,)),
]


def _case(shape: tuple[int, ...], axes: tuple[int, ...], dtype: type = np.float32):
    rng = np.random.default_rng(sum(shape))
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    cuts = [
        (axis, np.sort(rng.choice(shape[axis], max(1, shape[axis] // 2), replace=False)))
        for axis in axes
    ]
    expected = array
    for axis, positions in cuts:
        expected = np.take(expected, positions, axis=axis)
    return array, cuts, expected


def test_gather_is_built() -> None:
    assert kept_module.gather is not None, "run `python setup.py build_ext --inplace`"


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.float16, np.int8])
@pytest.mark.parametrize(("shape", "axes"), CASES)
def test_kept_slices_equal_successive_takes(
    shape: tuple[int, ...], axes: tuple[int, ...], dtype: type
) -> None:
    array, cuts, expected = _case(shape, axes, dtype)
    before = array.copy()
    found = kept_slices(array, cuts)
    assert found.shape == expected.shape and found.dtype == array.dtype
    np.testing.assert_array_equal(found, expected)
    assert not np.shares_memory(found, array)
    np.testing.assert_array_equal(array, before)  # the source is untouched


@pytest.mark.parametrize(("shape", "axes"), CASES)
def test_compact_in_place_equals_new_array(shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
    array, cuts, expected = _case(shape, axes)
    found = compact_kept(array, cuts)
    assert found is array  # the same array, shrunk: no new buffer
    assert found.shape == expected.shape
    np.testing.assert_array_equal(found, expected)


def test_non_contiguous_source_is_copied_right() -> None:
    base = np.arange(8 * 12, dtype=np.float32).reshape(8, 12)
    view = base[:, ::2]  # not contiguous
    kept = np.array([0, 2, 5])
    np.testing.assert_array_equal(kept_slices(view, [(1, kept)]), view[:, kept])


def test_numpy_fallback_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    array, cuts, expected = _case((6, 5, 3, 3), (0, 1))
    monkeypatch.setattr(kept_module, "gather", None)
    np.testing.assert_array_equal(kept_slices(array, cuts), expected)
    np.testing.assert_array_equal(compact_kept(array.copy(), cuts), expected)


def test_exclusive_ownership_is_recognised() -> None:
    array = np.zeros((4, 4), dtype=np.float32)
    assert exclusively_owned(array, references=1)
    view = array[1:]
    assert not exclusively_owned(array, references=1)  # a view shares the buffer
    assert not exclusively_owned(view, references=1)  # a view owns nothing
    del view
    holder = [array]
    assert not exclusively_owned(array, references=1)
    assert exclusively_owned(array, references=2)
    holder.clear()
    readonly = np.zeros(3)
    readonly.flags.writeable = False
    assert not exclusively_owned(readonly, references=1)
    assert not exclusively_owned(np.zeros((4, 4)).T, references=1)


@pytest.mark.parametrize(
    ("kept", "message"),
    [
        (np.array([0, 0, 1]), "must increase"),
        (np.array([2, 1]), "must increase"),
        (np.array([0, 5]), r"within \[0, 5\)"),
        (np.array([-1, 2]), "must increase"),
    ],
)
def test_gather_refuses_bad_positions(kept: np.ndarray, message: str) -> None:
    array = np.zeros((3, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        kept_slices(array, [(1, kept)])
    np.testing.assert_array_equal(array, 0)


def test_gather_refuses_mismatched_buffers() -> None:
    assert kept_module.gather is not None
    source = np.zeros(10, dtype=np.float32)
    with pytest.raises(ValueError, match="source has 40 bytes"):
        kept_module.gather(source, np.zeros(10, np.float32), (12,), (np.arange(3),), 4)
    with pytest.raises(TypeError, match="int64"):
        kept_module.gather(
            source, np.zeros(10, np.float32), (10,), (np.arange(3, dtype=np.int32),), 4
        )


def _kept_patterns(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Kept positions of the shapes the innermost copy is planned for."""
    heads = np.sort(rng.choice(size // 16, size // 32, replace=False))
    return {
        "scattered": np.sort(rng.choice(size, size // 2, replace=False)),  # 8-lane packing
        "runs of 16": (heads[:, None] * 16 + np.arange(16)).ravel(),  # whole heads: memmove
        "dense chunks": np.flatnonzero(np.arange(size) % 8 != 3),  # 7 of every 8
        "last only": np.array([size - 1]),
        "all": np.arange(size),
    }


@pytest.mark.parametrize("inner", [203, 256, 7])  # tail past the full 8-chunks; none; no chunk
@pytest.mark.parametrize("in_place", [False, True])
def test_every_innermost_copy_plan_equals_take(inner: int, in_place: bool) -> None:
    rng = np.random.default_rng(inner)
    for label, columns in _kept_patterns(inner, rng).items():
        for rows in (None, np.sort(rng.choice(9, 4, replace=False))):
            array = rng.standard_normal((9, inner)).astype(np.float32)
            expected = array[:, columns] if rows is None else array[rows][:, columns]
            cuts = [(1, columns)] if rows is None else [(0, rows), (1, columns)]
            found = compact_kept(array, cuts) if in_place else kept_slices(array, cuts)
            np.testing.assert_array_equal(found, expected, err_msg=label)


def test_scalar_copy_matches_without_avx2() -> None:
    """The portable element loop (what a CPU without AVX2 runs) gives the same results."""
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from onnx_graph.kept_slices import kept_slices\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((9, 203)).astype(np.float32)\n"
        "k = np.sort(rng.choice(203, 101, replace=False))\n"
        "assert np.array_equal(kept_slices(a, [(1, k)]), a[:, k])\n"
        "print('ok')\n"
    )
    env = {**__import__("os").environ, "SPARSEARCH_GATHER_SCALAR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def _conv_pair_model():
    import onnx_ir as ir
    import torch

    import onnx_graph as og
    from onnx_graph.testing import randomize_module

    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3)
    )
    model = og.lower(randomize_module(module, seed=4), (torch.randn(1, 3, 12, 12),))
    # Owned copies, as `onnx_graph.load` makes them (an export may share memory with torch).
    for name, value in model.graph.initializers.items():
        value.const_value = ir.Tensor(np.array(value.const_value.numpy(), copy=True), name=name)
    return model


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def test_in_place_prune_reuses_owned_buffers_and_spares_held_arrays() -> None:
    import onnx_graph as og
    from onnx_graph.testing import run_onnx
    from spa.allocation import plan_uniform

    model = _conv_pair_model()
    reference = og.prune(model, plan_uniform(model, og.analyze(model), 0.5, criterion="l1"))
    first, second = sorted(
        n for n in model.graph.initializers if model.graph.initializers[n].const_value.size > 16
    )
    held = model.graph.initializers[first].const_value.numpy()  # a user's reference
    held_before = held.copy()
    free_address = _address(model.graph.initializers[second].const_value.numpy())
    plan = plan_uniform(model, og.analyze(model), 0.5, criterion="l1")
    pruned = og.prune(model, plan, copy=False)
    np.testing.assert_array_equal(held, held_before)  # held elsewhere: copied, not overwritten
    assert _address(pruned.graph.initializers[second].const_value.numpy()) == free_address
    images = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(pruned, images)[0], run_onnx(reference, images)[0])


def test_background_gather_matches_takes_in_place_and_into_new_arrays() -> None:
    rng = np.random.default_rng(9)
    background = kept_module.BackgroundGather()
    owned = rng.standard_normal((512, 768)).astype(np.float32)  # 1.5 MiB: accepted
    held = rng.standard_normal((768, 512)).astype(np.float32)
    held_before = held.copy()
    small = rng.standard_normal((16, 16)).astype(np.float32)
    ints = np.arange(512 * 768, dtype=np.int64).reshape(512, 768)
    assert background.accepts(owned) and background.accepts(held)
    assert not background.accepts(small) and not background.accepts(ints)  # small, not floating
    owned_cuts = [(0, np.arange(0, 512, 2)), (1, np.arange(1, 768, 3))]
    held_cuts = [(1, np.sort(rng.choice(512, 100, replace=False)))]
    expected_owned = owned[np.ix_(owned_cuts[0][1], owned_cuts[1][1])].copy()
    expected_held = held[:, held_cuts[0][1]]
    address = _address(owned)
    background.add(owned, owned_cuts, in_place=True)
    background.add(held, held_cuts, in_place=False)
    background.start()
    assert not background.accepts(owned)  # nothing can join once started
    found_owned, found_held = background.finish()
    assert found_owned is owned and _address(owned) == address  # compacted in its own buffer
    np.testing.assert_array_equal(found_owned, expected_owned)
    np.testing.assert_array_equal(found_held, expected_held)
    np.testing.assert_array_equal(held, held_before)  # the held array is only read
    assert background.finish() == []  # done: nothing left


def test_background_gather_reports_a_bad_job_in_the_callers_thread() -> None:
    background = kept_module.BackgroundGather()
    array = np.zeros((1024, 512), dtype=np.float32)
    background.add(array, [(0, np.arange(4))], in_place=False)
    background._jobs[0] = (array, array, (1024,), (np.array([3, 1]),), 2048)  # broken on purpose
    background.start()
    with pytest.raises(ValueError, match="must increase"):
        background.finish()


def test_prune_with_and_without_the_background_gather_agree(monkeypatch) -> None:
    """Large weights are sliced on a helper thread while the nodes are rewritten: same model."""
    import onnx_ir as ir
    import torch

    import onnx_graph as og
    from onnx_graph.testing import randomize_module
    from spa.allocation import plan_uniform

    module = torch.nn.Sequential(
        torch.nn.Conv2d(64, 256, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(256, 256, 3),  # 2.4 MB
    )
    model = og.lower(randomize_module(module, seed=7), (torch.randn(1, 64, 8, 8),))
    for name, value in model.graph.initializers.items():
        value.const_value = ir.Tensor(np.array(value.const_value.numpy(), copy=True), name=name)
    plan = plan_uniform(model, og.analyze(model), 0.5, criterion="l1")
    before = {n: v.const_value.numpy().copy() for n, v in model.graph.initializers.items()}
    started: list[int] = []
    original_start = kept_module.BackgroundGather.start

    def counting_start(self) -> None:
        started.append(len(self._jobs))
        original_start(self)

    monkeypatch.setattr(kept_module.BackgroundGather, "start", counting_start)
    copied = og.prune(model, plan)  # the clone shares tensors: sliced into new arrays
    for name, array in before.items():  # the original is untouched
        np.testing.assert_array_equal(model.graph.initializers[name].const_value.numpy(), array)
    monkeypatch.setattr(kept_module.BackgroundGather, "MIN_BYTES", 1 << 62)
    synchronous = og.prune(model, plan)
    monkeypatch.setattr(kept_module.BackgroundGather, "MIN_BYTES", 1 << 20)
    in_place = og.prune(model, plan, copy=False)
    assert started == [1, 0, 1]  # the 256x256x3x3 weight went to the helper thread
    for pruned in (copied, in_place):
        weights = pruned.graph.initializers
        assert sorted(weights) == sorted(synchronous.graph.initializers)
        for name, value in synchronous.graph.initializers.items():
            np.testing.assert_array_equal(
                weights[name].const_value.numpy(), value.const_value.numpy()
            )


def test_background_gather_takes_nothing_on_one_core(monkeypatch) -> None:
    monkeypatch.setattr(kept_module, "available_cores", lambda: 1)
    assert not kept_module.BackgroundGather().accepts(np.zeros((1024, 512), dtype=np.float32))


def test_gather_many_hands_each_job_to_one_caller_through_shared_claims() -> None:
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal((6, 10)).astype(np.float32) for _ in range(5)]
    kept = np.array([1, 4, 7], dtype=np.int64)
    results = [np.empty((6, 3), dtype=np.float32) for _ in arrays]
    jobs = [(a, r, (6, 10), (None, kept), 4) for a, r in zip(arrays, results, strict=True)]
    claims = np.zeros(1, dtype=np.int64)
    assert kept_module.gather_many(jobs, claims) == 5  # the first caller takes every job
    assert kept_module.gather_many(jobs, claims) == 0  # nothing left for a second one
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result, array[:, kept])
    assert kept_module.gather_many(jobs) == 5  # without claims: every job
    with pytest.raises(ValueError, match="aligned int64"):
        kept_module.gather_many(jobs, np.zeros(1, dtype=np.int32))
