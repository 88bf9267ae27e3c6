"""Builds the tiny ONNX-text graphs of the shared rule suite: ``Conv -> <snippet> -> Conv``.

A producer conv ``p`` creates 8 channels (value ``h``), a snippet turns ``h`` into ``t`` and a
consumer reads ``t``. Parameters are graph inputs named ``p_*``; ``build_model`` makes them random
initializers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir


@dataclass(frozen=True)
class RuleCase:
    """A tiny graph exercising one op type; ``prunable`` says whether ``p_w1``'s group is."""

    op_type: str
    body: str
    extra_params: str = ""
    consumer_channels: int = 8
    prunable: bool = True
    spatial: int = 8
    tail: str = "y = Conv(t, p_w2)"
    output: str = "float[N,5,8,8] y"
    opset: int = 21


def graph_text(case: RuleCase) -> str:
    params = f"float[8,4,3,3] p_w1, float[8] p_b1, float[5,{case.consumer_channels},1,1] p_w2" + (
        f", {case.extra_params}" if case.extra_params else ""
    )
    size = case.spatial
    return (
        f'<ir_version: 10, opset_import: ["" : {case.opset}]>\n'
        + f"g (float[N,4,{size},{size}] x, {params}) => ({case.output}) {{\n"
        + "  h = Conv<pads=[1,1,1,1]>(x, p_w1, p_b1)\n"
        + "".join(f"  {line.strip()}\n" for line in case.body.strip().splitlines())
        + f"  {case.tail}\n}}"
    )


def build_model(text: str, seed: int = 0) -> ir.Model:
    """Parse ONNX text and make every ``p_*`` input a random initializer."""
    proto = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    model = ir.from_proto(proto)
    graph = model.graph
    for value in list(graph.inputs):
        if not value.name.startswith("p_"):
            continue
        shape = [int(d) for d in value.shape]
        if value.dtype == ir.DataType.INT64:
            array = np.asarray(rng.integers(0, 3, size=shape), dtype=np.int64)
        else:
            array = rng.standard_normal(shape).astype(np.float32) * 0.5
            if value.name.startswith("p_pos"):
                array = np.abs(array) + 0.5  # strictly positive (divisors, variances)
        graph.inputs.remove(value)
        value.const_value = ir.Tensor(array, name=value.name)
        graph.register_initializer(value)
    return model
