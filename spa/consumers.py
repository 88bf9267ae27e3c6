"""Consumer layers: the Conv/Gemm/MatMul nodes whose weight has an input-channel axis.

Removing channels of a group removes columns of every consumer weight reading them; OBSPA scores
that loss and compensates it on the surviving columns. Each consumer is seen as a matrix
``[rows, inputs]`` (rows = output channels x kernel taps), with its bias when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import constant_array


@dataclass
class Consumer:
    """One weight read as a ``[rows, inputs]`` matrix, with how to write it back."""

    node: ir.Node
    weight: ir.Value
    input_axis: int  # axis of ``weight`` holding input channels
    data: ir.Value  # the activation whose features the input axis multiplies
    bias: ir.Value | None  # 1-D bias added to this layer's outputs, if any
    #: +1 for a bias; -1 when the sink is the running mean of the BatchNorm right after a Conv.
    bias_sign: float = 1.0

    def matrix(self) -> np.ndarray:
        """The weight as float64 [rows, inputs]; rows group output channels and taps."""
        array = constant_array(self.weight)
        assert array is not None
        moved = np.moveaxis(array.astype(np.float64), self.input_axis, -1)
        return moved.reshape(-1, array.shape[self.input_axis])

    def output_rows(self) -> np.ndarray:
        """For each matrix row, the output channel (index into the bias) it feeds."""
        array = constant_array(self.weight)
        assert array is not None
        out_axis = 0 if self.input_axis != 0 else 1
        channel = np.arange(array.shape[out_axis]).reshape(
            [-1 if a == out_axis else 1 for a in range(array.ndim)]
        )
        channel = np.broadcast_to(channel, array.shape)
        return np.moveaxis(channel, self.input_axis, -1).reshape(-1, array.shape[self.input_axis])[
            :, 0
        ]

    def write(self, matrix: np.ndarray) -> None:
        """Store ``matrix`` (same layout as ``matrix()``) back into the weight initializer."""
        array = constant_array(self.weight)
        assert array is not None
        moved_shape = np.moveaxis(array, self.input_axis, -1).shape
        restored = np.moveaxis(matrix.reshape(moved_shape), -1, self.input_axis).astype(array.dtype)
        self.weight.const_value = ir.Tensor(np.ascontiguousarray(restored), name=self.weight.name)


def _matmul_bias(node: ir.Node, width: int) -> ir.Value | None:
    """The 1-D initializer an Add applies right after a MatMul (how exporters write a bias)."""
    for user, _ in node.outputs[0].uses():
        if user.op_type != "Add":
            continue
        for value in user.inputs:
            array = constant_array(value)
            if (
                value is not None
                and value.is_initializer()
                and array is not None
                and array.shape == (width,)
            ):
                return value
    return None


def _batchnorm_mean(node: ir.Node) -> ir.Value | None:
    """The running mean of the BatchNorm that alone reads this node's output, if any.

    A shift of the conv output is the opposite shift of that mean; writing it there keeps the
    repair in tensors the PyTorch module owns (a bias=False conv gets a constant zero bias in
    the export, which no module parameter maps back to).
    """
    uses = list(node.outputs[0].uses())
    if len(uses) != 1 or uses[0][0].op_type != "BatchNormalization" or uses[0][1] != 0:
        return None
    mean = uses[0][0].inputs[3]
    return mean if mean is not None and mean.is_initializer() else None


def find_consumers(model: ir.Model) -> list[Consumer]:
    """Every ungrouped Conv, Gemm and constant-weight MatMul with its weight and bias."""
    consumers = []
    for node in model.graph:
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        data = node.inputs[0] if node.inputs else None
        if (
            weight is None
            or data is None
            or not weight.is_initializer()
            or constant_array(weight) is None
        ):
            continue
        array = constant_array(weight)
        assert array is not None
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if bias is not None and not bias.is_initializer():
            bias = None
        if node.op_type == "Conv":
            groups = int(node.attributes["group"].value) if "group" in node.attributes else 1
            if groups == 1:
                mean = _batchnorm_mean(node)
                if mean is not None:
                    consumers.append(Consumer(node, weight, 1, data, mean, -1.0))
                else:
                    consumers.append(Consumer(node, weight, 1, data, bias))
        elif node.op_type == "Gemm" and array.ndim == 2:
            if "transA" in node.attributes and node.attributes["transA"].value:
                continue
            transposed = "transB" in node.attributes and bool(node.attributes["transB"].value)
            bias_array = constant_array(bias)
            if bias_array is None or bias_array.ndim != 1:
                bias = None
            consumers.append(Consumer(node, weight, 1 if transposed else 0, data, bias))
        elif node.op_type == "MatMul" and array.ndim == 2:
            bias = _matmul_bias(node, array.shape[1])
            consumers.append(Consumer(node, weight, 0, data, bias))
    return consumers
