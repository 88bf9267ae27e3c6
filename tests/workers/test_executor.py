"""The sparse executor equals plain onnxruntime on the same dense-with-zeros model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.workers.models import small_cnn, small_mlp
from workers.runtime.executor import SparseExecutor


def _onnxruntime(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _assert_close(actual, expected) -> None:
    for got, want in zip(actual, expected, strict=True):
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("fmt", ["auto", "csr", "4x1", "8x1", "4x4"])
@pytest.mark.parametrize("threads", [1, 2])
def test_cnn_matches_onnxruntime(fmt: str, threads: int) -> None:
    pattern = "csr" if fmt == "auto" else fmt
    model = small_cnn(0.85, pattern)
    x = np.random.default_rng(1).standard_normal((2, 3, 15, 13)).astype(np.float32)
    executor = SparseExecutor(model, threads=threads, fmt=fmt)
    # stem, expand (+Clip), project, down, fc; the depthwise conv stays dense.
    assert [layer.node_name for layer in executor.sparse_layers] == [
        "stem", "expand", "project", "down", "fc",
    ]  # fmt: skip
    assert executor.sparse_layers[1].clip == (0.0, 6.0)
    assert executor.sparse_layers[0].clip == (0.0, float("inf"))
    assert executor.sparse_layers[2].residual_name == "d"  # project + residual Add fused
    _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))


def test_auto_format_picks_the_block_pattern() -> None:
    executor = SparseExecutor(small_cnn(0.9, "4x1"), fmt="auto")
    formats = {layer.node_name: layer.weights.format for layer in executor.sparse_layers}
    assert formats["expand"] == "4x1" and formats["stem"] == "csr"


@pytest.mark.parametrize("fmt", ["csr", "4x1"])
def test_mlp_matches_onnxruntime(fmt: str) -> None:
    model = small_mlp(0.8, fmt)
    x = np.random.default_rng(2).standard_normal((3, 5, 24)).astype(np.float32)
    executor = SparseExecutor(model, threads=2, fmt=fmt)
    assert {layer.op_type for layer in executor.sparse_layers} == {"MatMul", "Gemm"}
    _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))


def test_dense_layers_stay_in_onnxruntime() -> None:
    model = small_cnn(0.3)
    executor = SparseExecutor(model, min_sparsity=0.5)
    assert executor.sparse_layers == []
    # Only the depthwise convolution leaves onnxruntime: it has a C kernel of its own.
    assert [layer.node_name for layer in executor.kernel_layers] == ["dw"]
    assert executor.segment_count == 2
    x = np.random.default_rng(3).standard_normal((1, 3, 15, 13)).astype(np.float32)
    _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))
