"""Small random ONNX models for the runtime tests: a CNN and two MLPs, weights made sparse."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workers.runtime.sparse_formats import BLOCK_SHAPES, sparsify

OPSET = [helper.make_opsetid("", 17)]


def _sparse(rng: np.random.Generator, shape: tuple[int, ...], sparsity: float, fmt: str):
    """Random weights of ``shape``, pruned along (out, rest) in the block pattern of ``fmt``."""
    dense = rng.standard_normal(shape).astype(np.float32) / np.sqrt(np.prod(shape[1:]))
    flat = sparsify(dense.reshape(shape[0], -1), sparsity, BLOCK_SHAPES[fmt])
    return flat.reshape(shape)


def _model(nodes, inputs, outputs, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "test", inputs, outputs,
        initializer=[numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=OPSET)
    onnx.checker.check_model(model, full_check=True)
    return model


def small_cnn(sparsity: float = 0.9, fmt: str = "csr", seed: int = 0) -> onnx.ModelProto:
    """Conv3x3+Relu, Conv1x1+Clip(0,6), depthwise Conv, strided Conv1x1, residual Add, Gemm."""
    rng = np.random.default_rng(seed)
    w = {
        "stem.w": _sparse(rng, (16, 3, 3, 3), sparsity, "csr"),
        "stem.b": rng.standard_normal(16).astype(np.float32),
        "expand.w": _sparse(rng, (32, 16, 1, 1), sparsity, fmt),
        "expand.b": rng.standard_normal(32).astype(np.float32),
        "dw.w": rng.standard_normal((32, 1, 3, 3)).astype(np.float32),
        "project.w": _sparse(rng, (32, 32, 1, 1), sparsity, fmt),
        "down.w": _sparse(rng, (24, 32, 1, 1), sparsity, fmt),
        "fc.w": _sparse(rng, (10, 24), sparsity, fmt),
        "fc.b": rng.standard_normal(10).astype(np.float32),
        "zero": np.array(0.0, dtype=np.float32),
        "six": np.array(6.0, dtype=np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "stem.w", "stem.b"], ["s"], "stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["s_act"], "stem_relu"),
        helper.make_node("Conv", ["s_act", "expand.w", "expand.b"], ["e"], "expand"),
        helper.make_node("Clip", ["e", "zero", "six"], ["e_act"], "expand_clip"),
        helper.make_node("Conv", ["e_act", "dw.w"], ["d"], "dw", group=32, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d", "project.w"], ["p"], "project"),
        helper.make_node("Add", ["p", "d"], ["r"], "residual"),
        helper.make_node("Conv", ["r", "down.w"], ["q"], "down", strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["q"], ["g"], "pool"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], "fc", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 15, 13])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])]
    return _model(nodes, inputs, outputs, w)


def small_mlp(sparsity: float = 0.9, fmt: str = "csr", seed: int = 0) -> onnx.ModelProto:
    """Token MLP on (batch, tokens, 24): MatMul+Add+Relu, MatMul, then a Gemm(transB=0) head."""
    rng = np.random.default_rng(seed)
    w = {
        "fc1.w": _sparse(rng, (48, 24), sparsity, fmt).T.copy(),
        "fc1.b": rng.standard_normal(48).astype(np.float32),
        "fc2.w": _sparse(rng, (24, 48), sparsity, fmt).T.copy(),
        "head.w": _sparse(rng, (12, 24), sparsity, fmt).T.copy(),
        "head.b": rng.standard_normal(12).astype(np.float32),
        "shape": np.array([-1, 24], dtype=np.int64),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "fc1.w"], ["h"], "fc1"),
        helper.make_node("Add", ["h", "fc1.b"], ["hb"], "fc1_bias"),
        helper.make_node("Relu", ["hb"], ["ha"], "fc1_relu"),
        helper.make_node("MatMul", ["ha", "fc2.w"], ["o"], "fc2"),
        helper.make_node("Reshape", ["o", "shape"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["y"], "head"),
        helper.make_node("Relu", ["y"], ["z"], "head_relu"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 24])]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["rows", 12])]
    return _model(nodes, inputs, outputs, w)
