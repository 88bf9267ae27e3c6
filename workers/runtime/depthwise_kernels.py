"""Depthwise convolution kernels: plain, and fused after a sparse convolution (MobileNet blocks).

Dense depthwise filters are not a sparse format, but running them in C keeps MobileNet-style
blocks out of onnxruntime; the fused runner computes a sparse conv, the depthwise conv and an
optional 1x1 projection over bands of rows that stay in cache. Arguments follow
:mod:`workers.runtime.kernels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workers.runtime.kernels import (
    POINTWISE,
    ConvGeometry,
    Isa,
    Runner,
    Workspace,
    activation_bounds,
    as_f32,
    conv_output_hw,
    extension,
    optional_f32,
    planned_input,
    resolve_isa_code,
    workspace_array,
)
from workers.runtime.sparse_formats import SparseMatrix


def depthwise_conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    strides: Sequence[int] = (1, 1),
    pads: Sequence[int] = (0, 0, 0, 0),
    dilations: Sequence[int] = (1, 1),
    bias: np.ndarray | None = None,
    clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Depthwise 2-D convolution (group = channels, NCHW) with dense (C, 1, kh, kw) weights.

    Not a sparse kernel: it lets the executor keep MobileNet-style blocks out of onnxruntime,
    whose depthwise convolution is slow outside its own NCHWc-transformed graphs. Arguments
    are as in :func:`sparse_conv2d`.
    """
    geometry = (tuple(weight.shape[-2:]), tuple(strides), tuple(pads), tuple(dilations))
    return plan_depthwise_conv2d(x.shape, weight, geometry, bias, clip, threads, isa, workspace)(
        x, None
    )


def plan_depthwise_conv2d(
    shape: Sequence[int],
    weight: np.ndarray,
    geometry: ConvGeometry,
    bias: np.ndarray | None = None,
    clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
    workspace: Workspace | None = None,
) -> Runner:
    """:func:`depthwise_conv2d` for inputs of ``shape`` (see :func:`plan_sparse_conv2d`)."""
    batch, channels, height, width = shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = geometry
    if weight.shape[0] != channels or weight.size != channels * kh * kw:
        raise ValueError(f"depthwise weight {weight.shape} does not match {channels} channels")
    oh, ow = conv_output_hw(height, width, geometry)
    out = workspace_array(workspace, "out", (batch, channels, oh, ow))
    weight_data, bias_data = as_f32(weight), optional_f32(bias)
    lo, hi = activation_bounds(clip)
    threads, isa_code = max(int(threads), 1), resolve_isa_code(isa)

    def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        data = planned_input(x, shape)
        extension().depthwise(
            data, weight_data, bias_data, out, batch, channels, height, width, oh, ow, kh, kw,
            sh, sw, pt, pl, pb, pr, dh, dw, lo, hi, threads, isa_code,
        )  # fmt: skip
        return out

    return run


def plan_conv_depthwise(
    shape: Sequence[int],
    weights: SparseMatrix,
    bias: np.ndarray | None,
    clip: tuple[float, float] | None,
    dw_weight: np.ndarray,
    conv: ConvGeometry = POINTWISE,
    depthwise: ConvGeometry | None = None,
    dw_bias: np.ndarray | None = None,
    dw_clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
    workspace: Workspace | None = None,
    project: SparseMatrix | None = None,
    project_bias: np.ndarray | None = None,
    project_clip: tuple[float, float] | None = None,
) -> Runner:
    """A sparse convolution followed by a depthwise one, the pair fused (MobileNet blocks), and
    optionally the 1x1 ``project`` convolution after them (a whole inverted-residual block).

    ``depthwise(clip(conv(x, W) + bias))`` with its own bias and clip, computed in bands of rows
    that stay in cache, so the tensors between the layers are never written out whole. With
    ``project`` (Cout, Cmid), the result is ``clip(project @ that + project_bias + residual)``.

    Args:
        shape: the input's (B, Cin, H, W); the runner takes float32 x of that shape.
        weights, bias, clip: the first convolution, weights packed as (Cmid, Cin * kh * kw).
        dw_weight: (Cmid, 1, kh, kw) depthwise filters.
        conv, depthwise: (kernel_shape, strides, pads, dilations) of the two convolutions
            (pads: top, left, bottom, right); the depthwise one defaults to 3x3, padding 1.
        dw_bias, dw_clip: the depthwise convolution's bias and activation bounds.
        threads, isa, workspace: as in :func:`sparse_conv2d`.
        project, project_bias, project_clip: the optional 1x1 convolution on the depthwise
            output; the runner's residual (B, Cout, Hout, Wout) is then added before its clip.

    Returns:
        ``runner(x, residual)`` -> (B, Cmid or Cout, Hout, Wout) float32, prepared once per
        shape (see :func:`plan_sparse_conv2d`).
    """
    batch, channels, height, width = shape
    (ckh, ckw), (csh, csw), (cpt, cpl, _, _), (cdh, cdw) = conv
    (kh, kw), strides, pads, dilations = depthwise or ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    m, k = weights.shape
    if k != channels * ckh * ckw or dw_weight.shape[0] != m or dw_weight.size != m * kh * kw:
        raise ValueError(
            f"shapes do not chain: x {tuple(shape)}, W {weights.shape}, dw {dw_weight.shape}"
        )
    mid_h, mid_w = conv_output_hw(height, width, conv)
    oh, ow = conv_output_hw(mid_h, mid_w, ((kh, kw), strides, pads, dilations))
    pt, pl, pb, pr = pads
    if project is not None and project.shape[1] != m:
        raise ValueError(f"project weights {project.shape} do not take {m} channels")
    pm, (pbr, pbc) = (0, (1, 1)) if project is None else (project.shape[0], project.block_shape)
    out = workspace_array(workspace, "out", (batch, pm or m, oh, ow))
    lo, hi = activation_bounds(clip)
    dw_lo, dw_hi = activation_bounds(dw_clip)
    p_lo, p_hi = activation_bounds(project_clip)
    p_arrays = (None, None, None) if project is None else (
        project.block_ptr, project.block_col, project.values
    )  # fmt: skip
    p_bias = optional_f32(project_bias)
    br, bc = weights.block_shape
    bias_data, dw_data, dw_bias_data = optional_f32(bias), as_f32(dw_weight), optional_f32(dw_bias)
    threads, isa_code = max(int(threads), 1), resolve_isa_code(isa)

    def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        data = planned_input(x, shape)
        extension().conv_depthwise(
            m, k, br, bc, weights.block_ptr, weights.block_col, weights.values, bias_data, lo, hi,
            channels, height, width, ckh, ckw, csh, csw, cpt, cpl, cdh, cdw, data, dw_data,
            dw_bias_data, out, batch, mid_h, mid_w, oh, ow, kh, kw, strides[0], strides[1],
            pt, pl, pb, pr, dilations[0], dilations[1], dw_lo, dw_hi, threads, isa_code,
            pm, pbr, pbc, *p_arrays, p_bias, p_lo, p_hi,
            None if project is None else optional_f32(residual),
        )  # fmt: skip
        return out

    return run
