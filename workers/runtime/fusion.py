"""Fusion of consecutive kernel layers into one C call, after the executor has cut the graph.

A sparse 1x1 convolution whose (activated) output feeds only a depthwise convolution becomes one
:func:`workers.runtime.kernels.expand_depthwise` call: MobileNet's expand + depthwise pair, where
the expanded tensor is the largest activation of the block and need not reach memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from workers.runtime import kernels
from workers.runtime.sparse_ops import KernelLayer

Step = TypeVar("Step")

POINTWISE = ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1))


def _is_pointwise_sparse(layer: KernelLayer) -> bool:
    return layer.is_sparse and layer.geometry == POINTWISE and layer.residual_name is None


def _is_depthwise(layer: KernelLayer) -> bool:
    return not layer.is_sparse and layer.geometry is not None


def fuse_expand_depthwise(expand: KernelLayer, depthwise: KernelLayer) -> KernelLayer:
    """One layer running ``expand`` (sparse 1x1 conv, bias, clip) then ``depthwise``."""
    assert depthwise.geometry is not None
    _, strides, pads, dilations = depthwise.geometry
    dw_weight, dw_bias, dw_clip = depthwise.weights, depthwise.bias, depthwise.clip

    def call(x, weights, bias, clip, threads, residual, workspace):
        return kernels.expand_depthwise(
            x, weights, bias, clip, dw_weight, strides, pads, dilations, dw_bias, dw_clip,
            threads, workspace=workspace,
        )  # fmt: skip

    return KernelLayer(
        f"{expand.node_name}+{depthwise.node_name}", "Conv+DepthwiseConv", expand.input_name,
        depthwise.output_name, expand.weights, expand.bias, call, clip=expand.clip,
    )  # fmt: skip


def fuse_steps(steps: Sequence[Step], private: Callable[[str], bool]) -> list[Step]:
    """Merge every (sparse 1x1 conv, depthwise conv) pair of consecutive kernel layers.

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
            and _is_pointwise_sparse(previous)
            and _is_depthwise(step)
            and step.input_name == previous.output_name
            and private(previous.output_name)
        ):
            fused[-1] = fuse_expand_depthwise(previous, step)  # type: ignore[assignment]
        else:
            fused.append(step)
    return fused
