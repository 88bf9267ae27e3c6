"""Output shapes of a few common ops from their input shapes, in Python.

``local_shapes`` reads most shapes off the graph; the few values whose dims the exporter left
unknown used to go through ONNX shape inference in a small model. On a ViT-B those are 72 nodes
of five op types (Reshape, Transpose, MatMul, Mul, Softmax): serialising them cost ~3 ms and
inference ~1.5 ms a run, against ~0.3 ms here. An op without a function here, or whose inputs are
not all known, still goes to ONNX inference, so this is an accelerator, never the only path.

One function per op type, registered by name: ``fn(node, input_shapes, constant) -> output
shapes or None`` where ``input_shapes`` holds each input's dims (None for an absent optional
input) and ``constant(index)`` an input's integer data when it is a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from onnx_graph.op_tables import table_decorator

Dims = list[int]
Constant = Callable[[int], "np.ndarray | None"]
ShapeFunction = Callable[[ir.Node, Sequence["Dims | None"], Constant], "list[Dims] | None"]

_FUNCTIONS: dict[str, ShapeFunction] = {}
#: ``@register_shape("Add", ...)``: the shape function of these op types (default ONNX domain).
register_shape = table_decorator(_FUNCTIONS)


def output_shapes(
    node: ir.Node, input_shapes: Sequence[Dims | None], constant: Constant
) -> list[Dims] | None:
    """The node's output dims, or None when no function covers it or it cannot tell."""
    if node.domain not in ("", "ai.onnx"):
        return None
    function = _FUNCTIONS.get(node.op_type)
    if function is None:
        return None
    try:
        return function(node, input_shapes, constant)
    except ValueError:  # inconsistent shapes: leave it to ONNX inference, which explains
        return None


@register_shape(
    "Softmax", "LogSoftmax", "Relu", "Sigmoid", "Tanh", "Erf", "Gelu", "Neg", "Sqrt", "Exp",
    "Identity", "Cast", "Abs", "Reciprocal",
)  # fmt: skip
def _same_as_input(
    node: ir.Node, shapes: Sequence[Dims | None], constant: Constant
) -> list[Dims] | None:
    first = shapes[0] if shapes else None
    return None if first is None else [list(first)]


@register_shape("Add", "Sub", "Mul", "Div", "Pow")
def _broadcast(
    node: ir.Node, shapes: Sequence[Dims | None], constant: Constant
) -> list[Dims] | None:
    if len(shapes) != 2 or shapes[0] is None or shapes[1] is None:
        return None
    return [list(np.broadcast_shapes(tuple(shapes[0]), tuple(shapes[1])))]


@register_shape("MatMul")
def _matmul(node: ir.Node, shapes: Sequence[Dims | None], constant: Constant) -> list[Dims] | None:
    if len(shapes) != 2 or shapes[0] is None or shapes[1] is None:
        return None
    a, b = list(shapes[0]), list(shapes[1])
    if not a or not b:
        return None
    a_vector, b_vector = len(a) == 1, len(b) == 1
    if a_vector:
        a = [1, *a]
    if b_vector:
        b = [*b, 1]
    if a[-1] != b[-2]:
        raise ValueError(f"MatMul contracts {a[-1]} with {b[-2]}")
    batch = list(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])))
    result = [*batch, a[-2], b[-1]]
    if a_vector:
        del result[-2]
    if b_vector:
        del result[-1]
    return [result]


@register_shape("Transpose")
def _transpose(
    node: ir.Node, shapes: Sequence[Dims | None], constant: Constant
) -> list[Dims] | None:
    if not shapes or shapes[0] is None:
        return None
    dims = shapes[0]
    attribute = node.attributes.get("perm")
    perm = list(range(len(dims)))[::-1] if attribute is None else [int(p) for p in attribute.value]
    if sorted(perm) != list(range(len(dims))):
        raise ValueError(f"perm {perm} for rank {len(dims)}")
    return [[dims[p] for p in perm]]


@register_shape("Reshape")
def _reshape(node: ir.Node, shapes: Sequence[Dims | None], constant: Constant) -> list[Dims] | None:
    if len(shapes) < 2 or shapes[0] is None:
        return None
    target = constant(1)
    if target is None:
        return None
    source = shapes[0]
    attribute = node.attributes.get("allowzero")
    allow_zero = attribute is not None and int(attribute.value) == 1
    dims = [int(v) for v in np.asarray(target).reshape(-1)]
    result: list[int] = []
    unknown = None
    for index, size in enumerate(dims):
        if size == 0 and not allow_zero:
            if index >= len(source):
                raise ValueError("Reshape copies a dim the input does not have")
            size = source[index]
        if size == -1:
            if unknown is not None:
                raise ValueError("Reshape target with two -1")
            unknown = index
            size = 1
        elif size < 0:
            raise ValueError(f"Reshape target dim {size}")
        result.append(size)
    total = int(np.prod(source, dtype=np.int64))
    known = int(np.prod(result, dtype=np.int64))
    if unknown is not None:
        if known == 0 or total % known:
            raise ValueError("Reshape cannot infer its -1 dim")
        result[unknown] = total // known
    elif known != total:
        raise ValueError(f"Reshape of {total} elements into {known}")
    return [result]
