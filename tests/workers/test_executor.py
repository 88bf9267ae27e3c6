"""The sparse executor equals plain onnxruntime on the same dense-with-zeros model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.workers.models import small_cnn, small_mlp
from workers.runtime.executor import SparseExecutor
from workers.runtime.sparse_formats import SparseMatrix


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
    # stem, expand (+Clip) fused with the depthwise conv, project, down, fc.
    assert [layer.node_name for layer in executor.sparse_layers] == [
        "stem", "expand+dw", "project", "down", "fc",
    ]  # fmt: skip
    assert executor.sparse_layers[1].op_type == "Conv+DepthwiseConv"
    assert executor.sparse_layers[1].clip == (0.0, 6.0)
    assert executor.sparse_layers[0].clip == (0.0, float("inf"))
    assert executor.sparse_layers[2].residual_name == "d"  # project + residual Add fused
    _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))


def test_auto_format_picks_the_block_pattern() -> None:
    executor = SparseExecutor(small_cnn(0.9, "4x1"), fmt="auto")
    formats = {
        layer.node_name: layer.weights.format
        for layer in executor.sparse_layers
        if isinstance(layer.weights, SparseMatrix)
    }
    assert formats["expand+dw"] == "4x1" and formats["stem"] == "csr"


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
    # The dense 3x3 stem on 3 channels runs in the kernels with every weight stored (as fast as
    # dense there) and the depthwise convolution has a C kernel of its own; pooling and
    # flattening follow a dense convolution, so they stay in its onnxruntime segment.
    assert [layer.node_name for layer in executor.kernel_layers] == ["stem", "dw"]
    assert executor.kernel_layers[0].weights.format == "4x1"  # type: ignore[union-attr]
    assert executor.segment_count == 2
    x = np.random.default_rng(3).standard_normal((1, 3, 15, 13)).astype(np.float32)
    _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))


def test_unsupported_layers_fall_back_to_onnxruntime() -> None:
    """Grouped (not depthwise) Conv, auto_pad SAME and Gemm with alpha != 1 stay dense."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)

    def sparse(*shape):
        w = rng.standard_normal(shape).astype(np.float32)
        return w * (rng.random(shape) > 0.9)

    arrays = {"g.w": sparse(8, 2, 3, 3), "s.w": sparse(8, 8, 3, 3), "fc.w": sparse(5, 8 * 36)}
    nodes = [
        helper.make_node("Conv", ["x", "g.w"], ["g"], "grouped", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["g", "s.w"], ["s"], "same", auto_pad="SAME_UPPER"),
        helper.make_node("Flatten", ["s"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "fc.w"], ["y"], "fc", transB=1, alpha=0.5),
    ]
    graph = helper.make_graph(
        nodes, "fallback",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        initializer=[numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    executor = SparseExecutor(model, min_sparsity=0.5)
    assert executor.kernel_layers == [] and executor.segment_count == 1
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))


def test_chained_residual_adds_all_fuse() -> None:
    """r1 = conv_a(x) + x; r2 = relu(conv_b(r1) + r1): the second Add reads a fused Add's output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)
    arrays = {
        name: (rng.standard_normal((8, 8, 1, 1)) * (rng.random((8, 8, 1, 1)) > 0.8)).astype(
            np.float32
        )
        for name in ("a.w", "b.w")
    }
    nodes = [
        helper.make_node("Conv", ["x", "a.w"], ["a"], "conv_a"),
        helper.make_node("Add", ["a", "x"], ["r1"], "add_1"),
        helper.make_node("Conv", ["r1", "b.w"], ["b"], "conv_b"),
        helper.make_node("Add", ["r1", "b"], ["r2"], "add_2"),
        helper.make_node("Relu", ["r2"], ["y"], "relu"),
    ]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 5, 5])],
        initializer=[numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    executor = SparseExecutor(model, threads=2)
    assert [layer.residual_name for layer in executor.kernel_layers] == ["x", "r1"]
    assert executor.kernel_layers[1].clip == (0.0, float("inf")) and executor.segment_count == 0
    x = rng.standard_normal((2, 8, 5, 5)).astype(np.float32)
    _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))


@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_glue_ops_run_without_onnxruntime(axis: int) -> None:
    """GlobalAveragePool (+ fused Relu) and Flatten on their own: no segment, same numbers."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"], "pool"),
        helper.make_node("Relu", ["g"], ["r"], "relu"),
        helper.make_node("Flatten", ["r"], ["y"], "flatten", axis=axis),
    ]
    graph = helper.make_graph(
        nodes, "glue", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    executor = SparseExecutor(model)
    assert executor.segment_count == 0
    assert executor.kernel_layers[0].clip == (0.0, float("inf"))  # Relu fused into the pool
    x = np.random.default_rng(5).standard_normal((2, 5, 4, 3)).astype(np.float32)
    (got,), (want,) = executor.run({"x": x}), _onnxruntime(model, {"x": x})
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_runs_alternating_input_shapes() -> None:
    """Runners are prepared per input shape: alternating batch sizes and image sizes stay exact."""
    model = small_cnn(0.85, "4x1")
    executor = SparseExecutor(model, threads=2, fmt="4x1")
    rng = np.random.default_rng(8)
    for shape in [(2, 3, 15, 13), (1, 3, 15, 13), (2, 3, 15, 13), (3, 3, 15, 13)]:
        x = rng.standard_normal(shape).astype(np.float32)
        _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_inverted_residual_block_fuses_into_one_layer(threads: int, stride: int) -> None:
    """expand+Clip, depthwise+Clip, project (+ residual Add when shapes allow): one kernel layer."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.workers.models import _sparse

    rng = np.random.default_rng(9)
    arrays = {
        "e.w": _sparse(rng, (48, 8, 1, 1), 0.8, "4x1"),
        "e.b": rng.standard_normal(48).astype(np.float32),
        "d.w": rng.standard_normal((48, 1, 3, 3)).astype(np.float32),
        "d.b": rng.standard_normal(48).astype(np.float32),
        "p.w": _sparse(rng, (8, 48, 1, 1), 0.8, "4x1"),
        "lo": np.array(0.0, dtype=np.float32),
        "hi": np.array(6.0, dtype=np.float32),
    }
    residual = stride == 1
    nodes = [
        helper.make_node("Conv", ["x", "e.w", "e.b"], ["e"], "expand"),
        helper.make_node("Clip", ["e", "lo", "hi"], ["ea"], "expand_clip"),
        helper.make_node(
            "Conv",
            ["ea", "d.w", "d.b"],
            ["d"],
            "dw",
            group=48,
            pads=[1, 1, 1, 1],
            strides=[stride, stride],
        ),  # fmt: skip
        helper.make_node("Clip", ["d", "lo", "hi"], ["da"], "dw_clip"),
        helper.make_node("Conv", ["da", "p.w"], ["p"], "project"),
    ]
    if residual:
        nodes.append(helper.make_node("Add", ["p", "x"], ["y"], "residual"))
    out = "y" if residual else "p"
    size = 20 // stride
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 20, 20])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2, 8, size, size])],
        initializer=[numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    executor = SparseExecutor(model, threads=threads, fmt="4x1")
    assert [layer.op_type for layer in executor.kernel_layers] == ["Conv+DepthwiseConv+Conv"]
    assert executor.kernel_layers[0].residual_name == ("x" if residual else None)
    assert executor.segment_count == 0
    x = rng.standard_normal((2, 8, 20, 20)).astype(np.float32)
    _assert_close(executor.run({"x": x}), _onnxruntime(model, {"x": x}))
