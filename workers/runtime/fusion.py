"""Fusion of consecutive kernel layers into one C call, after the executor has cut the graph.

A convolution on the sparse kernels whose (activated) output feeds only a depthwise convolution
becomes one :func:`workers.runtime.depthwise_kernels.plan_conv_depthwise` runner: MobileNet's expand + depthwise
pairs (and its stem + first depthwise), where the tensor between the two is the largest
activation of the block and need not reach memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from workers.runtime import depthwise_kernels, kernels
from workers.runtime.sparse_formats import SparseMatrix
from workers.runtime.sparse_ops import KernelLayer

Step = TypeVar("Step")


def _is_sparse_conv(layer: KernelLayer) -> bool:
    return layer.is_sparse and layer.geometry is not None and layer.residual_name is None


def _is_depthwise(layer: KernelLayer) -> bool:
    return not layer.is_sparse and layer.geometry is not None


def _is_pointwise(layer: KernelLayer) -> bool:
    return layer.is_sparse and layer.geometry == kernels.POINTWISE


def fuse_conv_depthwise(
    first: KernelLayer, depthwise: KernelLayer, project: KernelLayer | None = None
) -> KernelLayer:
    """One layer running ``first`` (sparse conv, bias, clip) then ``depthwise``, and then the
    pointwise ``project`` (bias, residual, clip) when given."""
    assert first.geometry is not None and depthwise.geometry is not None
    last = project or depthwise

    def prepare(layer: KernelLayer, shape: tuple[int, ...], threads: int) -> kernels.Runner:
        assert isinstance(first.weights, SparseMatrix) and first.geometry is not None
        assert isinstance(depthwise.weights, np.ndarray)
        assert project is None or isinstance(project.weights, SparseMatrix)
        return depthwise_kernels.plan_conv_depthwise(
            shape, first.weights, first.bias, first.clip, depthwise.weights, first.geometry,
            depthwise.geometry, depthwise.bias, depthwise.clip, threads,
            workspace=layer.workspace,
            project=None if project is None else project.weights,  # type: ignore[arg-type]
            project_bias=None if project is None else project.bias,
            project_clip=None if project is None else project.clip,
        )  # fmt: skip

    names = [first.node_name, depthwise.node_name] + ([project.node_name] if project else [])
    return KernelLayer(
        "+".join(names), "Conv+DepthwiseConv" + ("+Conv" if project else ""), first.input_name,
        last.output_name, first.weights, first.bias, prepare, clip=first.clip,
        residual_name=last.residual_name, parts=(first, depthwise),
    )  # fmt: skip


def _chains(previous: KernelLayer, step: KernelLayer, private: Callable[[str], bool]) -> bool:
    return step.input_name == previous.output_name and private(previous.output_name)


def fuse_steps(steps: Sequence[Step], private: Callable[[str], bool]) -> list[Step]:
    """Merge every (sparse conv, depthwise conv) pair of consecutive kernel layers, and a
    pointwise sparse conv after such a pair (with its residual Add and activation) into it.

    Args:
        steps: the executor's steps in order (kernel layers and onnxruntime segments).
        private: whether a value is read by exactly one node and is not a graph output.
    """
    fused: list[Step] = []
    for step in steps:
        previous = fused[-1] if fused else None
        if not isinstance(step, KernelLayer) or not isinstance(previous, KernelLayer):
            fused.append(step)
        elif _is_sparse_conv(previous) and _is_depthwise(step) and _chains(previous, step, private):
            fused[-1] = fuse_conv_depthwise(previous, step)  # type: ignore[assignment]
        elif (
            previous.parts is not None
            and previous.residual_name is None
            and previous.op_type == "Conv+DepthwiseConv"
            and _is_pointwise(step)
            and _chains(previous, step, private)
        ):
            first, depthwise = previous.parts
            fused[-1] = fuse_conv_depthwise(first, depthwise, step)  # type: ignore[assignment]
        else:
            fused.append(step)
    return fused
