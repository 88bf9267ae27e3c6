"""Concrete shapes at one batch size read off the graph itself, without whole-model inference.

Dynamic-batch exports carry most shapes already: the dynamo exporter writes dims such as
``batch``, ``12*batch`` or ``197*batch``, which evaluate exactly once the batch is fixed. Only a
few values have unknown dims (a Reshape whose target was computed at run time and has just been
made a constant, and what follows it). Those get their shapes from ``shape_functions`` where it
covers the op (a ViT-B's 72 such nodes are Reshape, Transpose, MatMul, Mul and Softmax); the
rest go through ONNX's own shape inference, together in one small model fed the shapes already
found. On a ViT-B this replaces serialising and inferring the whole model (22 ms).

When a dim stays unknown (an expression this module does not read, an op whose inference needs
values computed at run time), ``local_shapes`` returns None and the caller falls back to
whole-model inference (``static_shapes.SkeletonInference``).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping

import numpy as np
import onnx
import onnx_ir as ir

from onnx_graph.shape_functions import output_shapes
from onnx_graph.static_shapes import Shapes, batch_symbols

logger = logging.getLogger(__name__)

# Integer initializers up to this size reach per-node inference as data (Reshape targets, Slice
# bounds, Split sizes); larger ones only as types.
_DATA_MAX_ELEMENTS = 64

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


def evaluated_dim(dim: int | ir.SymbolicDim, symbols: set[str], batch: int) -> int | None:
    """The dim's size with every batch symbol set to ``batch``; None when it cannot be read.

    Reads integers, batch symbols and ``+ - * // %`` of them (``12*batch``); anything else
    (another symbol, a function call, true division) is unknown.
    """
    if isinstance(dim, int):
        return dim
    text = dim.value
    if text is None:
        return None
    if text in symbols:
        return batch
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    return _evaluate(tree.body, symbols, batch)


def _evaluate(node: ast.expr, symbols: set[str], batch: int) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return batch if node.id in symbols else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = _evaluate(node.operand, symbols, batch)
        return None if operand is None else -operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _evaluate(node.left, symbols, batch)
        right = _evaluate(node.right, symbols, batch)
        if left is None or right is None:
            return None
        if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
            return None
        return int(_BINARY[type(node.op)](left, right))
    return None


def local_shapes(model: ir.Model, batch: int = 1) -> Shapes | None:
    """Every graph input's and node output's shape with the batch at ``batch``, or None."""
    graph = model.graph
    symbols = batch_symbols(model)
    cache: dict[str, int | None] = {}
    shapes: Shapes = {}
    for value in graph.inputs:
        dims = _evaluated(value.shape, symbols, batch, cache)
        if dims is None:
            return None
        shapes[value.name or ""] = dims
    unresolved: list[ir.Node] = []
    for node in graph:
        for value in node.outputs:
            dims = _evaluated(value.shape, symbols, batch, cache)
            if dims is None:
                unresolved.append(node)
                break
            shapes[value.name or ""] = dims
    unresolved = [node for node in unresolved if not _computed(node, shapes, symbols, batch, cache)]
    if not unresolved:
        return shapes
    inferred = _infer_nodes(model, unresolved, shapes)
    if inferred is None:
        return None
    for node in unresolved:
        for value in node.outputs:
            dims = _checked(value.shape, inferred.get(value.name or ""), symbols, batch, cache)
            if dims is None:
                logger.debug("no local shape for %s (node %s)", value.name, node.name)
                return None
            shapes[value.name or ""] = dims
    return shapes


def _computed(
    node: ir.Node, shapes: Shapes, symbols: set[str], batch: int, cache: dict[str, int | None]
) -> bool:
    """Fill ``shapes`` with the node's outputs from ``shape_functions`` where it covers the op,
    knows every input and agrees with the dims the graph states; False leaves it to inference."""
    input_shapes: list[list[int] | None] = []
    for value in node.inputs:
        if value is None:
            input_shapes.append(None)
        elif value.const_value is not None:
            input_shapes.append(list(value.const_value.shape.numpy()))
        else:
            dims = shapes.get(value.name or "")
            if dims is None or None in dims:
                return False
            input_shapes.append(dims)  # type: ignore[arg-type]

    def constant(index: int) -> np.ndarray | None:
        tensor = _small_int_constant(node.inputs[index] if index < len(node.inputs) else None)
        return None if tensor is None else tensor.numpy()

    found = output_shapes(node, input_shapes, constant)
    if found is None or len(found) != len(node.outputs):
        return False
    checked = [
        _checked(value.shape, dims, symbols, batch, cache)  # type: ignore[arg-type]
        for value, dims in zip(node.outputs, found, strict=True)
    ]
    if any(dims is None for dims in checked):
        return False
    for value, dims in zip(node.outputs, checked, strict=True):
        shapes[value.name or ""] = dims  # type: ignore[assignment]
    return True


def _small_int_constant(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The value's data when it is an integer constant small enough to be read as data (a
    Reshape target, Slice bounds, Split sizes); None otherwise."""
    tensor = value.const_value if value is not None else None
    if tensor is None or not tensor.dtype.is_integer() or tensor.size > _DATA_MAX_ELEMENTS:
        return None
    return tensor


def _evaluated(
    shape: ir.Shape | None, symbols: set[str], batch: int, cache: dict[str, int | None]
) -> list[int | None] | None:
    if shape is None:
        return None
    dims: list[int | None] = []
    for dim in shape.dims:
        size = _dim_size(dim, symbols, batch, cache)
        if size is None:
            return None
        dims.append(size)
    return dims


def _dim_size(
    dim: int | ir.SymbolicDim, symbols: set[str], batch: int, cache: dict[str, int | None]
) -> int | None:
    if type(dim) is int:
        return dim
    text = str(dim)  # the same few expressions recur on hundreds of values
    if text not in cache:
        cache[text] = evaluated_dim(dim, symbols, batch)
    return cache[text]


def _checked(
    shape: ir.Shape | None,
    inferred: list[int | None] | None,
    symbols: set[str],
    batch: int,
    cache: dict[str, int | None],
) -> list[int | None] | None:
    """Inference's dims, checked against the graph's where it knows them; None if unknown."""
    if inferred is None or None in inferred:
        return None
    if shape is None:
        return inferred
    if len(shape) != len(inferred):
        return None
    for dim, size in zip(shape, inferred, strict=True):
        known = _dim_size(dim, symbols, batch, cache)
        if known is not None and known != size:
            return None  # the graph and inference disagree: leave it to whole-model inference
    return inferred


def _infer_nodes(
    model: ir.Model, nodes: list[ir.Node], shapes: Mapping[str, list[int | None]]
) -> Shapes | None:
    """Output shapes of ``nodes`` (in graph order) by ONNX shape inference on just them.

    One small model holds the nodes; what they read from elsewhere enters as typed inputs with
    the shapes found, small integer constants as initializers (Reshape targets, Slice bounds).
    """
    produced = {value.name for node in nodes for value in node.outputs}
    inputs: list[onnx.ValueInfoProto] = []
    initializers: list[onnx.TensorProto] = []
    seen: set[str] = set()
    for node in nodes:
        for value in node.inputs:
            if value is None or not value.name or value.name in produced or value.name in seen:
                continue
            seen.add(value.name)
            data = _small_int_constant(value)
            if data is not None:
                initializers.append(ir.serde.serialize_tensor(data))
                continue
            tensor = value.const_value
            dims = list(tensor.shape.numpy()) if tensor is not None else shapes.get(value.name)
            if dims is None or value.dtype is None:
                return None
            inputs.append(onnx.helper.make_tensor_value_info(value.name, value.dtype, dims))
    graph = onnx.helper.make_graph(
        [ir.serde.serialize_node(node) for node in nodes],
        "local_shapes",
        inputs,
        [onnx.helper.make_empty_tensor_value_info(name) for name in produced if name],
        initializers,
    )
    opsets = [
        onnx.helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()
    ]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception as error:  # onnx raises several unrelated types
        logger.debug("local shape inference failed: %s", error)
        return None
    result: Shapes = {}
    for info in (*inferred.graph.value_info, *inferred.graph.output):
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            result[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
            ]
    return result
