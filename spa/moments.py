"""Data-free second moments of every channel axis, from what a trained model stores.

OBSPA needs E[x x^T] of each consumer layer's input without calibration data. BatchNorm running
statistics give the true mean and variance of each conv output; the weights give how channels
correlate (cov(Wx) = W cov(x) W^T); nonlinearities are handled with a Gaussian model. The derivation
is in ``docs/obspa.md``. Values whose statistics cannot be derived have no entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import constant_array, static_shape

logger = logging.getLogger(__name__)


@dataclass
class Moments:
    """Mean and covariance of a value's features along ``axis`` (other axes are samples)."""

    axis: int
    mean: np.ndarray
    cov: np.ndarray

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.diag(self.cov), 1e-12))


_NODES = np.polynomial.hermite_e.hermegauss(48)

ACTIVATIONS: dict[str, Callable[[np.ndarray, ir.Node], np.ndarray]] = {
    "Relu": lambda z, n: np.maximum(z, 0.0),
    "Clip": lambda z, n: np.clip(z, *_clip_bounds(n)),
    "Sigmoid": lambda z, n: 1.0 / (1.0 + np.exp(-z)),
    "Tanh": lambda z, n: np.tanh(z),
    "HardSigmoid": lambda z, n: np.clip(z / 6.0 + 0.5, 0.0, 1.0),
    "HardSwish": lambda z, n: z * np.clip(z / 6.0 + 0.5, 0.0, 1.0),
    "LeakyRelu": lambda z, n: np.where(z > 0, z, 0.01 * z),
    "Elu": lambda z, n: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
    "Gelu": lambda z, n: 0.5 * z * (1.0 + np.tanh(0.7978845608 * (z + 0.044715 * z**3))),
}
PASS_THROUGH = {
    "Identity",
    "Dropout",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
}


def _clip_bounds(node: ir.Node) -> tuple[float, float]:
    low = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    high = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
    return (float(low) if low is not None else -np.inf, float(high) if high is not None else np.inf)


def activation_moments(moments: Moments, function: Callable[[np.ndarray], np.ndarray]) -> Moments:
    """Moments of f(z) for z Gaussian: exact per channel, first-order Hermite cross terms.

    cov(f(z_i), f(z_j)) ~ a_i a_j cov(z_i, z_j) with a = E[f'(z)] = cov(f(z), z) / var(z) (Stein):
    the first term of the Hermite expansion, and positive semi-definite with the exact diagonal.
    """
    points, weights = _NODES
    weights = weights / weights.sum()
    mean, std = moments.mean, moments.std
    z = mean[:, None] + std[:, None] * points[None, :]
    fz = function(z)
    f_mean = fz @ weights
    f_var = np.maximum(((fz - f_mean[:, None]) ** 2) @ weights, 0.0)
    slope = ((fz - f_mean[:, None]) * points[None, :]) @ weights / std
    cov = slope[:, None] * moments.cov * slope[None, :]
    np.fill_diagonal(cov, np.maximum(f_var, np.diag(cov)))
    return Moments(moments.axis, f_mean, cov)


def _linear(moments: Moments, matrices: np.ndarray, bias: np.ndarray | None, axis: int) -> Moments:
    """y = sum_p W_p x_p + b with x_p i.i.d. copies (kernel taps): matrices [P, out, in]."""
    mean = matrices.sum(axis=0) @ moments.mean
    cov = np.einsum("poi,ij,pqj->oq", matrices, moments.cov, matrices)
    if bias is not None:
        mean = mean + bias
    return Moments(axis, mean, cov)


def _white(size: int, axis: int) -> Moments:
    return Moments(axis, np.zeros(size), np.eye(size))


def _conv(node: ir.Node, inputs: list[Moments | None]) -> Moments | None:
    weight = constant_array(node.inputs[1])
    if weight is None:
        return None
    groups = int(node.attributes["group"].value) if "group" in node.attributes else 1
    out_channels, per_group = weight.shape[:2]
    x = inputs[0] or _white(per_group * groups, 1)
    taps = weight.reshape(out_channels, per_group, -1).transpose(2, 0, 1).astype(np.float64)
    dense = np.zeros((taps.shape[0], out_channels, per_group * groups))
    out_per_group = out_channels // groups
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[:, rows, g * per_group : (g + 1) * per_group] = taps[:, rows]
    bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
    return _linear(x, dense, bias, 1)


def _matmul(node: ir.Node, inputs: list[Moments | None]) -> Moments | None:
    weight = constant_array(node.inputs[1])
    rank = len(static_shape(node.inputs[0]) or ())
    if weight is None or weight.ndim != 2 or rank < 2:
        return None
    x = inputs[0] or _white(weight.shape[0], rank - 1)
    if x.axis != rank - 1:
        return None
    return _linear(x, weight.T[None].astype(np.float64), None, rank - 1)


def _gemm(node: ir.Node, inputs: list[Moments | None]) -> Moments | None:
    weight = constant_array(node.inputs[1])
    if weight is None or ("transA" in node.attributes and node.attributes["transA"].value):
        return None
    if not ("transB" in node.attributes and node.attributes["transB"].value):
        weight = weight.T
    x = inputs[0] or _white(weight.shape[1], 1)
    bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
    if x.axis != 1 or (bias is not None and bias.size not in (1, weight.shape[0])):
        return None
    return _linear(x, weight[None].astype(np.float64), bias, 1)


def _batchnorm(node: ir.Node, inputs: list[Moments | None]) -> Moments | None:
    scale, bias, mean, var = (constant_array(v) for v in node.inputs[1:5])
    if scale is None or bias is None or mean is None or var is None:
        return None
    eps = float(node.attributes["epsilon"].value) if "epsilon" in node.attributes else 1e-5
    x = inputs[0] or _white(len(var), 1)
    # Running statistics are the true mean and variance of the input: keep only its correlation.
    correlation = x.cov / np.outer(x.std, x.std)
    gain = scale * np.sqrt(var / (var + eps))
    return Moments(1, bias.astype(np.float64), correlation * np.outer(gain, gain))


def _layernorm(node: ir.Node, inputs: list[Moments | None]) -> Moments | None:
    scale = constant_array(node.inputs[1])
    bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
    rank = len(static_shape(node.inputs[0]) or ())
    if scale is None or scale.ndim != 1 or rank == 0:
        return None
    x = inputs[0]
    correlation = x.cov / np.outer(x.std, x.std) if x is not None else np.eye(len(scale))
    mean = bias.astype(np.float64) if bias is not None else np.zeros(len(scale))
    return Moments(rank - 1, mean, correlation * np.outer(scale, scale))


def _add(node: ir.Node, inputs: list[Moments | None]) -> Moments | None:
    known = [m for m in inputs if m is not None]
    constants = [constant_array(v) for v in node.inputs]
    if not known:
        return None
    axis = known[0].axis
    mean, cov = np.zeros_like(known[0].mean), np.zeros_like(known[0].cov)
    for _value, moments, constant in zip(node.inputs, inputs, constants, strict=True):
        if moments is not None and moments.axis == axis and len(moments.mean) == len(mean):
            mean, cov = mean + moments.mean, cov + moments.cov  # branches taken as uncorrelated
        elif constant is not None and constant.size in (1, len(mean)):
            mean = mean + constant.reshape(-1)
        else:
            return None
    return Moments(axis, mean, cov)


def _transpose(node: ir.Node, inputs: list[Moments | None]) -> Moments | None:
    x = inputs[0]
    if x is None or "perm" not in node.attributes:
        return None
    perm = list(node.attributes["perm"].value)
    return Moments(perm.index(x.axis), x.mean, x.cov)


def _reshape(node: ir.Node, inputs: list[Moments | None]) -> Moments | None:
    """Only reshapes that keep the feature axis where it is (flatten of trailing 1-sized dims)."""
    x = inputs[0]
    before, after = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if x is None or before is None or after is None or len(after) <= x.axis:
        return None
    if after[x.axis] == before[x.axis] and before[1 : x.axis] == after[1 : x.axis]:
        return Moments(x.axis, x.mean, x.cov)
    return None


PROPAGATORS: dict[str, Callable[[ir.Node, list[Moments | None]], Moments | None]] = {
    "Conv": _conv,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "Add": _add,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "Flatten": _reshape,
}


def _bind(
    function: Callable[[np.ndarray, ir.Node], np.ndarray], node: ir.Node
) -> Callable[[np.ndarray], np.ndarray]:
    return lambda z: function(z, node)


def estimate_moments(model: ir.Model) -> dict[str, Moments]:
    """Data-free moments of every value the propagation reaches, keyed by value name.

    Graph inputs are unknown; a Conv or MatMul fed by an unknown value assumes a white input, so
    its output correlation reflects filter similarity; the next norm layer sets the true scale.
    """
    moments: dict[str, Moments] = {}
    for node in model.graph:  # onnx-ir keeps nodes in topological order
        inputs = [moments.get(v.name or "") if v is not None else None for v in node.inputs]
        result: Moments | None = None
        try:
            if node.op_type in PROPAGATORS:
                result = PROPAGATORS[node.op_type](node, inputs)
            elif node.op_type in ACTIVATIONS and inputs and inputs[0] is not None:
                result = activation_moments(inputs[0], _bind(ACTIVATIONS[node.op_type], node))
            elif node.op_type in PASS_THROUGH and inputs and inputs[0] is not None:
                result = inputs[0]
        except (ValueError, IndexError, KeyError) as error:  # shapes the model does not agree on
            logger.debug("no moments for %s (%s): %s", node.name, node.op_type, error)
            result = None
        if result is not None and node.outputs and node.outputs[0].name:
            moments[node.outputs[0].name] = result
    return moments
