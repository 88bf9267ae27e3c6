"""Rules that turn one ONNX weight layer (Conv, Gemm, MatMul) into a call of the C kernels.

One rule per op type, registered by decorator; a rule returns None when the node's attributes
are outside what the kernels run (transposed A, grouped but not depthwise convolution, ...) or the
weight is not sparse enough, and the executor then leaves that node to onnxruntime. Depthwise
convolutions always run in the C kernel: onnxruntime's is slow outside its full-graph layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from workers.runtime import depthwise_kernels, kernels
from workers.runtime.sparse_formats import BLOCK_SHAPES, SparseMatrix, pack

#: Block formats tried by ``choose_format("auto")``, fastest first (bench/kernels.py).
AUTO_FORMATS = ("4x1", "4x4", "8x1")

#: Dense ungrouped KxK convolutions (K > 1) with at most this many input features per output
#: (3x3 stems on RGB images: 27) run in the kernels too, packed in 4x1 blocks with every value
#: stored. On the 2-core EPYC the 32 x 27 stem alone is on par with onnxruntime's Conv (0.50 vs
#: 0.43 ms, noisy), but it can then fuse with a following depthwise convolution (MobileNet) and
#: the graph keeps one onnxruntime segment less; ResNet's 7x7 stem (147 features) is 1.7x
#: slower in the kernels (5.5 vs 3.3 ms), so larger stems stay in onnxruntime.
STEM_FEATURES = 32

Clip = tuple[float, float] | None


#: ``prepare(layer, input_shape, threads)``: the layer's runner for that shape (kernels.Runner).
Prepare = Callable[["KernelLayer", tuple[int, ...], int], kernels.Runner]


@dataclass
class KernelLayer:
    """A weight layer bound to its packed weights, run by the C kernels.

    ``run(x, threads, residual)`` computes ``clip(layer(x) + bias + residual)``: the bias, a
    following residual Add (``residual_name``) and a Relu/Clip are fused into the kernel.
    ``prepare`` makes a runner per input shape on first use, with every argument of the C call
    worked out, so later runs cost microseconds of Python; the executor fuses (sets ``clip``,
    ``residual_name``) before any run.
    """

    node_name: str
    op_type: str
    input_name: str
    output_name: str
    weights: SparseMatrix | np.ndarray | None  # None: a weight-free glue op (glue_ops)
    bias: np.ndarray | None
    prepare: Prepare
    clip: Clip = None
    residual_name: str | None = None
    workspace: kernels.Workspace = field(default_factory=kernels.Workspace)
    geometry: kernels.ConvGeometry | None = None  # Conv layers only
    parts: tuple[KernelLayer, KernelLayer] | None = None  # a fused layer's conv and depthwise
    _runners: dict[tuple[tuple[int, ...], int], kernels.Runner] = field(
        default_factory=dict, repr=False
    )

    @property
    def is_sparse(self) -> bool:
        """True for weights packed for the sparse kernels (a dense stem's too; False for the
        dense depthwise kernel)."""
        return isinstance(self.weights, SparseMatrix)

    def run(self, x: np.ndarray, threads: int, residual: np.ndarray | None = None) -> np.ndarray:
        """Apply the layer and everything fused into it to ``x``.

        The result may live in the layer's workspace: the next call overwrites it.
        """
        key = (x.shape, threads)
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runners[key] = self.prepare(self, x.shape, threads)
        return runner(x, residual)


SparseOpRule = Callable[[onnx.NodeProto, dict[str, np.ndarray], str, float], "KernelLayer | None"]
_RULES: dict[str, SparseOpRule] = {}


def register_sparse_op(op_type: str) -> Callable[[SparseOpRule], SparseOpRule]:
    """Register the rule for ``op_type``; a second rule for the same op type is an error."""

    def decorate(rule: SparseOpRule) -> SparseOpRule:
        if op_type in _RULES:
            raise ValueError(f"a sparse rule for {op_type} is already registered")
        _RULES[op_type] = rule
        return rule

    return decorate


def sparse_op_types() -> list[str]:
    """Op types that have a sparse rule."""
    return sorted(_RULES)


def weight_sparsity(weight: np.ndarray) -> float:
    """Fraction of exactly-zero entries."""
    return 1.0 - np.count_nonzero(weight) / max(weight.size, 1)


def choose_format(matrix: np.ndarray, fmt: str) -> str:
    """Resolve "auto": the first block format that stores no extra zeros, else CSR."""
    if fmt != "auto":
        return fmt
    nonzeros = np.count_nonzero(matrix)
    for name in AUTO_FORMATS:
        if matrix.shape[1] >= BLOCK_SHAPES[name][1]:
            if pack(matrix, name).stored_values == nonzeros:
                return name
    return "csr"


def make_layer(
    node: onnx.NodeProto, initializers: dict[str, np.ndarray], fmt: str, min_sparsity: float
) -> KernelLayer | None:
    """Apply the registered rule for ``node.op_type`` (None when there is none or it declines).

    Args:
        node: the ONNX node.
        initializers: constant tensors of the graph by name.
        fmt: sparse format name or "auto" (see :func:`choose_format`).
        min_sparsity: weights with a smaller fraction of zeros stay dense (rule declines).
    """
    rule = _RULES.get(node.op_type)
    return rule(node, initializers, fmt, min_sparsity) if rule else None


def _sparse_weight(node: onnx.NodeProto, initializers: dict[str, np.ndarray], min_sparsity: float):
    """The constant weight input of ``node`` if it is sparse enough, else None."""
    if len(node.input) < 2:
        return None
    weight = initializers.get(node.input[1])
    if weight is None or weight.dtype != np.float32 or weight_sparsity(weight) < min_sparsity:
        return None
    return weight


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}


def _pack(matrix: np.ndarray, fmt: str) -> SparseMatrix:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pack(matrix, choose_format(matrix, fmt))


def _optional_bias(
    node: onnx.NodeProto, initializers: dict[str, np.ndarray], index: int, rows: int
):
    """The 1-D bias input at ``index`` (zeros folded away), or False when it is not usable."""
    if len(node.input) <= index or not node.input[index]:
        return None
    bias = initializers.get(node.input[index])
    if bias is None or bias.size not in (1, rows) or bias.ndim > 1:
        return False
    return np.broadcast_to(bias.astype(np.float32).reshape(-1), (rows,)).copy()


def _conv_geometry(attrs: dict[str, Any]) -> tuple[tuple[int, ...], ...] | None:
    """(strides, pads, dilations) of a 2-D Conv with explicit or VALID padding."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        return None
    strides = tuple(attrs.get("strides", (1, 1)))
    pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
    dilations = tuple(attrs.get("dilations", (1, 1)))
    return strides, pads, dilations


@register_sparse_op("Conv")
def conv_rule(node, initializers, fmt, min_sparsity):
    """2-D Conv with constant weight and bias: ungrouped and sparse, a dense stem, or depthwise."""
    attrs = _attributes(node)
    weight = initializers.get(node.input[1])
    geometry = _conv_geometry(attrs)
    if weight is None or weight.ndim != 4 or weight.dtype != np.float32 or geometry is None:
        return None
    strides, pads, dilations = geometry
    cout, cin_per_group, kh, kw = weight.shape
    group = attrs.get("group", 1)
    bias = _optional_bias(node, initializers, 2, cout)
    if bias is False:
        return None
    if group == cout and cin_per_group == 1 and group != 1:
        layer_weights: SparseMatrix | np.ndarray = weight
        prepare: Prepare = _plan_depthwise
    elif group == 1 and (
        _sparse_weight(node, initializers, min_sparsity) is not None
        or (cin_per_group * kh * kw <= STEM_FEATURES and kh * kw > 1)
    ):
        matrix = weight.reshape(cout, -1)
        dense = weight_sparsity(weight) < min_sparsity
        layer_weights = _pack(matrix, "4x1" if dense else fmt)
        prepare = _plan_conv
    else:
        return None
    return KernelLayer(
        node.name, node.op_type, node.input[0], node.output[0], layer_weights, bias, prepare,
        geometry=((kh, kw), strides, pads, dilations),
    )  # fmt: skip


def _plan_depthwise(layer: KernelLayer, shape: tuple[int, ...], threads: int) -> kernels.Runner:
    assert isinstance(layer.weights, np.ndarray) and layer.geometry is not None
    return depthwise_kernels.plan_depthwise_conv2d(
        shape, layer.weights, layer.geometry, layer.bias, layer.clip, threads,
        workspace=layer.workspace,
    )  # fmt: skip


def _plan_conv(layer: KernelLayer, shape: tuple[int, ...], threads: int) -> kernels.Runner:
    assert isinstance(layer.weights, SparseMatrix) and layer.geometry is not None
    return kernels.plan_sparse_conv2d(
        shape, layer.weights, layer.geometry, layer.bias, layer.clip, threads,
        workspace=layer.workspace,
    )  # fmt: skip


def _plan_linear(layer: KernelLayer, shape: tuple[int, ...], threads: int) -> kernels.Runner:
    assert isinstance(layer.weights, SparseMatrix)
    return kernels.plan_sparse_linear(
        shape, layer.weights, layer.bias, layer.clip, threads, workspace=layer.workspace
    )


@register_sparse_op("Gemm")
def gemm_rule(node, initializers, fmt, min_sparsity):
    """Gemm with constant sparse B, transA=0 and alpha = beta = 1: ``x @ W.T + bias``."""
    attrs = _attributes(node)
    weight = _sparse_weight(node, initializers, min_sparsity)
    if weight is None or weight.ndim != 2 or attrs.get("transA", 0):
        return None
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return None
    matrix = weight if attrs.get("transB", 0) else weight.T
    bias = _optional_bias(node, initializers, 2, matrix.shape[0])
    if bias is False:
        return None
    return KernelLayer(
        node.name, node.op_type, node.input[0], node.output[0], _pack(matrix, fmt), bias,
        _plan_linear,
    )  # fmt: skip


@register_sparse_op("MatMul")
def matmul_rule(node, initializers, fmt, min_sparsity):
    """MatMul by a constant sparse 2-D matrix on the right (a Linear on 3-D input)."""
    weight = _sparse_weight(node, initializers, min_sparsity)
    if weight is None or weight.ndim != 2 or node.input[0] in initializers:
        return None
    return KernelLayer(
        node.name, node.op_type, node.input[0], node.output[0], _pack(weight.T, fmt), None,
        _plan_linear,
    )  # fmt: skip


def initializer_arrays(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers, Constant-node outputs and Identities of those, as NumPy arrays.

    The legacy torch exporter deduplicates equal initializers and reaches the copies through
    Identity nodes, so a Conv's bias can be an Identity output.
    """
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    return arrays
