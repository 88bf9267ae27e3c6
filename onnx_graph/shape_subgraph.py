"""Read a run-time shape computation (``Shape -> Slice/Gather -> Concat``) without running it.

Exporters build Reshape targets from the shapes of activations so the batch can vary. Such a
subgraph only moves dimensions around, so it can be evaluated on the graph's own (symbolic) value
shapes: each entry comes out as an int or as the name of a symbolic dim (``"batch"``). Anything
beyond that small set of ops (arithmetic, unknown dims) gives None, and the caller falls back to
shape inference or to running the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnx_graph.op_tables import table_decorator

Entries = list[int | str]
_Evaluator = Callable[[ir.Node, list[Entries | None]], Entries | None]
_EVALUATORS: dict[str, _Evaluator] = {}
_evaluator = table_decorator(_EVALUATORS)


def symbolic_entries(value: ir.Value | None, depth: int = 12) -> Entries | None:
    """Entries of a 0-D or 1-D integer value as ints and symbolic dim names, or None."""
    if value is None or depth == 0:
        return None
    if value.const_value is not None:
        array = value.const_value.numpy()
        if array.ndim > 1 or array.dtype.kind not in "iu":
            return None
        return [int(v) for v in array.reshape(-1)]
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in _EVALUATORS:
        return None
    if node.op_type == "Shape":
        return _EVALUATORS["Shape"](node, [])
    inputs = [symbolic_entries(v, depth - 1) if v is not None else None for v in node.inputs]
    return _EVALUATORS[node.op_type](node, inputs)


def _int_attribute(node: ir.Node, name: str, default: int | None) -> int | None:
    attribute = node.attributes.get(name)
    return int(attribute.value) if attribute is not None else default


@_evaluator("Shape")
def _shape(node: ir.Node, inputs: list[Entries | None]) -> Entries | None:
    data = node.inputs[0]
    if data is None or data.shape is None:
        return None
    dims: Entries = []
    for dim in data.shape:
        if isinstance(dim, int):
            dims.append(dim)
        elif dim.value is not None:
            dims.append(str(dim.value))
        else:
            return None
    start = _int_attribute(node, "start", 0) or 0
    end = _int_attribute(node, "end", None)
    return dims[start:end]


@_evaluator("Concat")
def _concat(node: ir.Node, inputs: list[Entries | None]) -> Entries | None:
    if any(piece is None for piece in inputs):
        return None
    return [entry for piece in inputs for entry in piece or []]


@_evaluator("Slice")
def _slice(node: ir.Node, inputs: list[Entries | None]) -> Entries | None:
    data, bounds = inputs[0], inputs[1:]
    if data is None or len(bounds) < 2 or any(b is None for b in bounds):
        return None
    if not all(isinstance(e, int) for b in bounds for e in b or []):
        return None
    starts, ends = bounds[0], bounds[1]
    axes = bounds[2] if len(bounds) > 2 else [0]
    steps = bounds[3] if len(bounds) > 3 else [1]
    if [len(starts or []), len(ends or []), len(axes or [])] != [1, 1, 1] or axes not in (
        [0],
        [-1],
    ):
        return None
    step = int((steps or [1])[0])
    if step == 0:
        return None
    return data[slice(int(starts[0]), int(ends[0]), step)]  # type: ignore[index]


@_evaluator("Gather")
def _gather(node: ir.Node, inputs: list[Entries | None]) -> Entries | None:
    data, indices = inputs[0], inputs[1]
    if data is None or indices is None or _int_attribute(node, "axis", 0) not in (0, -1):
        return None
    if not all(isinstance(i, int) for i in indices):
        return None
    try:
        return [data[int(i)] for i in indices]
    except IndexError:
        return None


@_evaluator("Unsqueeze", "Squeeze", "Cast", "Identity")
def _same_entries(node: ir.Node, inputs: list[Entries | None]) -> Entries | None:
    if node.op_type == "Cast":
        to = _int_attribute(node, "to", None)
        if to not in (ir.DataType.INT64.value, ir.DataType.INT32.value):
            return None
    return inputs[0]


def as_constant(entries: Entries, batch_symbols: set[str]) -> np.ndarray | None:
    """The entries as a constant Reshape target: the one batch entry becomes -1.

    None when an entry is another symbol, when more than one entry follows the batch, or when
    the batch entry would join an existing -1.
    """
    batch_entries = [i for i, e in enumerate(entries) if isinstance(e, str)]
    if any(entries[i] not in batch_symbols for i in batch_entries) or len(batch_entries) > 1:
        return None
    if batch_entries and -1 in entries:
        return None
    return np.array([-1 if isinstance(e, str) else e for e in entries], dtype=np.int64)
