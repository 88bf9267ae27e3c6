"""Fusion of consecutive kernel layers into one C call, after the executor has cut the graph.

A convolution on the sparse kernels whose (activated) output feeds only a depthwise convolution
becomes one :func:`workers.runtime.kernels.plan_conv_depthwise` runner: MobileNet's expand + depthwise
pairs (and its stem + first depthwise), where the tensor between the two is the largest
activation of the block and need not reach memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from workers.runtime import kernels
from workers.runtime.sparse_formats import SparseMatrix
from workers.runtime.sparse_ops import KernelLayer

Step = TypeVar("Step")


def _is_sparse_conv(layer: KernelLayer) -> bool:
    return layer.is_sparse and layer.geometry is not None and layer.residual_name is None


def _is_depthwise(layer: KernelLayer) -> bool:
    return not layer.is_sparse and layer.geometry is not None


def fuse_conv_depthwise(first: KernelLayer, depthwise: KernelLayer) -> KernelLayer:
    """One layer running ``first`` (sparse conv, bias, clip) then ``depthwise``."""
    assert first.geometry is not None and depthwise.geometry is not None

    def prepare(layer: KernelLayer, shape: tuple[int, ...], threads: int) -> kernels.Runner:
        assert isinstance(layer.weights, SparseMatrix) and first.geometry is not None
        assert isinstance(depthwise.weights, np.ndarray)
        return kernels.plan_conv_depthwise(
            shape, layer.weights, layer.bias, layer.clip, depthwise.weights, first.geometry,
            depthwise.geometry, depthwise.bias, depthwise.clip, threads,
            workspace=layer.workspace,
        )  # fmt: skip

    return KernelLayer(
        f"{first.node_name}+{depthwise.node_name}", "Conv+DepthwiseConv", first.input_name,
        depthwise.output_name, first.weights, first.bias, prepare, clip=first.clip,
    )  # fmt: skip


def fuse_steps(steps: Sequence[Step], private: Callable[[str], bool]) -> list[Step]:
    """Merge every (sparse conv, depthwise conv) pair of consecutive kernel layers.

    Args:
        steps: the executor's steps in order (kernel layers and onnxruntime segments).
        private: whether a value is read by exactly one node and is not a graph output.
    """
    fused: list[Step] = []
    for step in steps:
        previous = fused[-1] if fused else None
        if (
            isinstance(step, KernelLayer)
            and isinstance(previous, KernelLayer)
            and _is_sparse_conv(previous)
            and _is_depthwise(step)
            and step.input_name == previous.output_name
            and private(previous.output_name)
        ):
            fused[-1] = fuse_conv_depthwise(previous, step)  # type: ignore[assignment]
        else:
            fused.append(step)
    return fused
