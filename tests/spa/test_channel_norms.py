"""One-pass channel magnitudes agree with plain numpy for every layout and order."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import spa.channel_norms as channel_norms
from onnx_graph.groups import GroupMember
from spa.channel_norms import ChannelNormCache, axis_magnitudes
from spa.importance import member_channel_norms


def _reference(array: np.ndarray, axis: int, order: int) -> np.ndarray:
    magnitude = np.abs(array.astype(np.float64)) ** order
    return magnitude.sum(axis=tuple(a for a in range(array.ndim) if a != axis))


@pytest.mark.parametrize(
    "shape", [(7,), (5, 3), (6, 4, 3, 3), (2, 3, 4, 5, 1), (8, 1, 3, 3), (1, 9), (33, 17)]
)
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_every_axis_matches_numpy(shape: tuple[int, ...], order: int, dtype: type) -> None:
    array = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    sums = axis_magnitudes(array, set(range(array.ndim)), order)
    assert sorted(sums) == list(range(array.ndim))
    for axis, found in sums.items():
        assert found.shape == (shape[axis],)
        np.testing.assert_allclose(
            found, _reference(array, axis, order), rtol=2e-3 if dtype == np.float16 else 1e-5
        )


def test_non_contiguous_input_is_read_in_its_logical_order() -> None:
    array = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32).T
    sums = axis_magnitudes(array, {0, 1}, 1)
    np.testing.assert_allclose(sums[0], _reference(array, 0, 1), rtol=1e-5)
    np.testing.assert_allclose(sums[1], _reference(array, 1, 1), rtol=1e-5)


def test_compiled_and_numpy_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    if channel_norms.dual_sums is None:
        pytest.skip("spa._channel_norms is not built")
    array = np.random.default_rng(2).standard_normal((16, 8, 3, 3)).astype(np.float32)
    compiled = axis_magnitudes(array, {0, 1, 2}, 2)
    monkeypatch.setattr(channel_norms, "dual_sums", None)
    plain = axis_magnitudes(array, {0, 1, 2}, 2)
    for axis in compiled:
        np.testing.assert_allclose(compiled[axis], plain[axis], rtol=1e-5)


def test_bad_order_is_refused() -> None:
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        axis_magnitudes(np.ones((2, 2), dtype=np.float32), {0}, 3)


def test_member_norms_sum_positions_into_channels() -> None:
    weight = np.arange(24, dtype=np.float32).reshape(4, 6) - 10.0
    graph = ir.Graph([], [], nodes=[], name="g")
    value = ir.Value(
        name="w", shape=ir.Shape(weight.shape), const_value=ir.Tensor(weight, name="w")
    )
    graph.register_initializer(value)
    model = ir.Model(graph, ir_version=8)
    # Axis 1 positions (0, 1, 2, 3, 4, 5) belong to channels (0, 0, 1, 1, 2, 2): a flatten x2.
    member = GroupMember("w", 1, 6, True, np.arange(6), np.repeat(np.arange(3), 2), ())
    cache = ChannelNormCache(model, 1)
    norms = member_channel_norms(model, member, 1, cache)
    column = np.abs(weight).sum(axis=0)
    np.testing.assert_allclose(norms, column.reshape(3, 2).sum(axis=1))
    # The pass also cached axis 0: no second read of the tensor for the output channels.
    np.testing.assert_allclose(cache.per_position("w", 0), np.abs(weight).sum(axis=1))


def _model_with(weights: dict[str, np.ndarray]) -> ir.Model:
    graph = ir.Graph([], [], nodes=[], name="g")
    for name, weight in weights.items():
        graph.register_initializer(
            ir.Value(
                name=name, shape=ir.Shape(weight.shape), const_value=ir.Tensor(weight, name=name)
            )
        )
    return ir.Model(graph, ir_version=8)


def test_prefetch_splits_large_weights_over_two_threads_with_equal_sums(monkeypatch) -> None:
    import threading

    rng = np.random.default_rng(2)
    weights = {
        "conv": rng.standard_normal((256, 128, 3, 3)).astype(np.float32),  # 1.2 MB
        "fc": rng.standard_normal((1024, 512)).astype(np.float32),  # 2.1 MB
        "fc2": rng.standard_normal((512, 1024)).astype(np.float32),
        "small": rng.standard_normal((16, 8)).astype(np.float32),
    }
    monkeypatch.setattr(channel_norms, "available_cores", lambda: 2)
    threads: dict[str, str] = {}
    original_fill = ChannelNormCache._fill

    def recording_fill(self, name, tensor, axis):
        threads[name] = threading.current_thread().name
        original_fill(self, name, tensor, axis)

    monkeypatch.setattr(ChannelNormCache, "_fill", recording_fill)
    cache = ChannelNormCache(_model_with(weights), 1)
    cache.prefetch([("conv", 1), ("fc", 0), ("fc2", 1), ("small", 0), ("fc", 1)])
    assert "small" not in threads  # below the size that pays for a thread
    assert sorted(threads) == ["conv", "fc", "fc2"]
    assert set(threads.values()) == {threading.current_thread().name, "sparsearch-norms"}
    for name in ("conv", "fc", "fc2", "small"):
        for axis in (0, 1):
            np.testing.assert_allclose(
                cache.per_position(name, axis), _reference(weights[name], axis, 1), rtol=1e-5
            )
    assert "small" in threads  # computed when first asked for


def test_prefetch_does_nothing_on_one_core(monkeypatch) -> None:
    monkeypatch.setattr(channel_norms, "available_cores", lambda: 1)
    weights = {n: np.ones((1024, 512), dtype=np.float32) for n in ("a", "b")}
    cache = ChannelNormCache(_model_with(weights), 2)
    cache.prefetch([("a", 0), ("b", 0)])
    assert cache._cache == {}
    np.testing.assert_allclose(cache.per_position("a", 0), np.full(1024, 512.0))
