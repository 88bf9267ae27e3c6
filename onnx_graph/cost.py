"""Cost model: multiply-accumulates and parameter counts of an ONNX graph, per node and in total.

Symbolic dimensions (a dynamic batch) count as 1, so MACs are per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir


@dataclass
class CostReport:
    macs: int
    params: int
    macs_per_node: dict[str, int] = field(default_factory=dict)

    def ratio_to(self, reference: CostReport) -> tuple[float, float]:
        """(params ratio, MACs ratio) of this report over ``reference``."""
        return self.params / max(reference.params, 1), self.macs / max(reference.macs, 1)


def _numel(value: ir.Value | None) -> int | None:
    if value is None or value.shape is None:
        return None
    return int(np.prod([d if isinstance(d, int) else 1 for d in value.shape], dtype=np.int64))


def _dims(value: ir.Value | None) -> list[int]:
    if value is None or value.shape is None:
        return []
    return [d if isinstance(d, int) else 1 for d in value.shape]


def _conv_macs(node: ir.Node) -> int:
    weight = _dims(node.inputs[1])
    output = _numel(node.outputs[0]) or 0
    return output * int(np.prod(weight[1:])) if weight else 0


def _conv_transpose_macs(node: ir.Node) -> int:
    weight = _dims(node.inputs[1])
    data = _numel(node.inputs[0]) or 0
    return data * int(np.prod(weight[1:])) if weight else 0


def _matmul_macs(node: ir.Node) -> int:
    a = _dims(node.inputs[0])
    output = _numel(node.outputs[0]) or 0
    return output * (a[-1] if a else 0)


def _gemm_macs(node: ir.Node) -> int:
    a = _dims(node.inputs[0])
    transposed = any(k == "transA" and int(v.value) for k, v in node.attributes.items())
    inner = (a[0] if transposed else a[-1]) if a else 0
    return (_numel(node.outputs[0]) or 0) * inner


_MAC_COUNTERS = {
    "Conv": _conv_macs,
    "ConvTranspose": _conv_transpose_macs,
    "MatMul": _matmul_macs,
    "Gemm": _gemm_macs,
}


def count_cost(model: ir.Model) -> CostReport:
    """MACs of Conv/ConvTranspose/Gemm/MatMul nodes and parameters of floating initializers.

    Shapes are inferred on a copy when some are missing (``model`` itself is not changed).
    """
    if any(out.shape is None for node in model.graph for out in node.outputs):
        from onnx_graph.prepare import prepare

        model = prepare(model.clone())
    macs_per_node = {}
    for node in model.graph:
        counter = _MAC_COUNTERS.get(node.op_type)
        if counter is not None and node.domain in ("", "ai.onnx") and node.name:
            macs_per_node[node.name] = counter(node)
    params = 0
    for value in model.graph.initializers.values():
        if value.dtype is not None and value.dtype.is_floating_point():
            params += _numel(value) or 0
    return CostReport(sum(macs_per_node.values()), params, macs_per_node)
