"""Python face of the compiled sparse kernels: sparse matmul, 1x1/KxK convolution and linear.

Every call takes a thread count and an instruction-set choice explicitly, so measurements state
what they ran. The instruction set defaults to the best one the CPU reports (AVX2+FMA, else the
portable build); ``SPARSEARCH_KERNEL_ISA=portable`` or ``isa="portable"`` forces the fallback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from workers.runtime.sparse_formats import SparseMatrix

# libgomp reads this when the extension loads: spin briefly (~tens of microseconds) between
# layers instead of the default ~0.3 s, so idle kernel threads do not starve onnxruntime's.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

try:
    from workers.runtime import _sparse_kernels as _ext  # type: ignore[attr-defined]
except ImportError as error:  # pragma: no cover - depends on the build
    raise ImportError(
        "sparsearch's sparse kernels are not compiled: run `pip install .` or "
        "`python setup.py build_ext --inplace` (needs a C compiler)"
    ) from error

Isa = Literal["auto", "avx2", "portable"]
#: (kernel_shape, strides, pads, dilations) of a 2-D convolution; pads: top, left, bottom, right.
ConvGeometry = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
#: 1x1, unit stride, no padding: a convolution that is a matrix product over pixels.
POINTWISE: ConvGeometry = ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
_ISA_CODES = {"portable": 0, "avx2": 1, "auto": -1}
_ISA_NAMES = {0: "portable", 1: "avx2"}


def extension() -> Any:
    """The compiled extension module (for glue ops with a C loop of their own)."""
    return _ext


def build_info() -> dict[str, bool]:
    """What the extension was built with and what this CPU supports."""
    return {key: bool(value) for key, value in _ext.build_info().items()}


def _isa_code(isa: Isa | None) -> int:
    chosen = isa or os.environ.get("SPARSEARCH_KERNEL_ISA", "auto")
    if chosen not in _ISA_CODES:
        raise ValueError(f"unknown instruction set {chosen!r}; use one of {sorted(_ISA_CODES)}")
    return _ISA_CODES[chosen]


def selected_isa(isa: Isa | None = None) -> str:
    """The instruction set a kernel call with this ``isa`` argument runs on this machine."""
    info = build_info()
    if _isa_code(isa) != 0 and info["avx2_fma_compiled"] and info["cpu_avx2_fma"]:
        return "avx2"
    return "portable"


class Workspace:
    """Reusable output and scratch arrays, one per role, kept between calls of one layer.

    Fresh multi-megabyte arrays come from ``mmap`` and pay a page fault per 4 KiB on first
    touch, which costs more than a sparse layer's arithmetic; reusing them avoids that.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, role: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 C-contiguous array of ``shape`` for ``role`` (contents undefined)."""
        array = self._arrays.get(role)
        if array is None or array.shape != shape:
            array = self._arrays[role] = aligned_empty(shape)
        return array


def aligned_empty(shape: tuple[int, ...], alignment: int = 64) -> np.ndarray:
    """An uninitialised float32 array whose data starts on an ``alignment``-byte boundary.

    NumPy only guarantees 16 bytes; the kernels' 32-byte vector loads of a row then straddle
    cache lines, which costs 15-20% on CSR (bench: aligned vs 16-byte-offset X, same process).
    Layer outputs are the next layer's inputs, so the executor's arrays are all aligned.
    """
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count + alignment // 4, dtype=np.float32)
    start = (-raw.ctypes.data % alignment) // 4
    return raw[start : start + count].reshape(shape)


def _array(workspace: Workspace | None, role: str, shape: tuple[int, ...]) -> np.ndarray:
    return workspace.get(role, shape) if workspace else aligned_empty(shape)


def _activation_bounds(clip: tuple[float, float] | None) -> tuple[float, float]:
    if clip is None:
        return -np.inf, np.inf
    return float(clip[0]), float(clip[1])


def spmm(
    weights: SparseMatrix,
    x: np.ndarray,
    bias: np.ndarray | None = None,
    clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
    out: np.ndarray | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """``clip(W @ x + bias + residual)`` for sparse W (M, K) and dense x (K, N) or (B, K, N).

    Args:
        weights: packed (M, K) matrix.
        x: float32 (K, N) or (B, K, N); N is the axis the kernel vectorises (pixels, tokens).
        bias: optional (M,) added before the activation.
        clip: fused activation bounds, (0, inf) for Relu, (0, 6) for Relu6; None for identity.
        threads: OpenMP threads (1 = no parallel region).
        isa: "auto", "avx2" (used only when the CPU supports it) or "portable".
        out: optional float32 C-contiguous output to write into.
        residual: optional tensor of the output's shape added before the activation (a fused
            residual Add).

    Returns:
        (M, N) or (B, M, N) float32.
    """
    m, k = weights.shape
    data = np.ascontiguousarray(x, dtype=np.float32)
    batched = data.ndim == 3
    if data.ndim not in (2, 3) or data.shape[-2] != k:
        raise ValueError(f"x must be (K={k}, N) or (B, K, N), got {data.shape}")
    batch, n = (data.shape[0] if batched else 1), data.shape[-1]
    out_shape = (batch, m, n) if batched else (m, n)
    if out is None:
        out = np.empty(out_shape, dtype=np.float32)
    elif out.shape != out_shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 of shape {out_shape}")
    bias_data = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if bias_data is not None and bias_data.shape != (m,):
        raise ValueError(f"bias must have shape ({m},), got {bias_data.shape}")
    residual_data = None
    if residual is not None:
        residual_data = np.ascontiguousarray(residual, dtype=np.float32).reshape(out_shape)
    lo, hi = _activation_bounds(clip)
    br, bc = weights.block_shape
    _ext.spmm(
        m, k, n, br, bc, weights.block_ptr, weights.block_col, weights.values, data, out,
        bias_data, residual_data, batch, lo, hi, max(int(threads), 1), _isa_code(isa),
    )  # fmt: skip
    return out


def sparse_linear(
    x: np.ndarray,
    weights: SparseMatrix,
    bias: np.ndarray | None = None,
    clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """``clip(x @ W.T + bias + residual)`` for x (..., K), sparse W (M, K): Gemm and Linear.

    The kernel vectorises over rows of x, so x is transposed to (K, rows) first; that copy is
    O(rows * K) against O(rows * K * M * density) multiply-adds (none for a single row).
    """
    return plan_sparse_linear(x.shape, weights, bias, clip, threads, isa)(x, residual)


def plan_sparse_linear(
    shape: Sequence[int],
    weights: SparseMatrix,
    bias: np.ndarray | None = None,
    clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
    workspace: Workspace | None = None,
) -> Runner:
    """:func:`sparse_linear` for inputs of ``shape`` (see :func:`plan_sparse_conv2d`)."""
    m, k = weights.shape
    if not shape or shape[-1] != k:
        raise ValueError(f"x must be (..., K={k}), got {tuple(shape)}")
    lead, rows = tuple(shape[:-1]), int(np.prod(shape[:-1], dtype=np.int64))
    out = _array(workspace, "out", (m, rows))
    bias_data = _optional_f32(bias)
    lo, hi = _activation_bounds(clip)
    br, bc = weights.block_shape
    threads, isa_code = max(int(threads), 1), _isa_code(isa)

    def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        columns = _f32(planned_input(x, shape).reshape(rows, k).T)
        residual_t = None if residual is None else _f32(residual.reshape(rows, m).T)
        _ext.spmm(
            m, k, rows, br, bc, weights.block_ptr, weights.block_col, weights.values, columns,
            out, bias_data, residual_t, 1, lo, hi, threads, isa_code,
        )  # fmt: skip
        return np.ascontiguousarray(out.T).reshape(*lead, m)

    return run


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                     dilation: int) -> int:  # fmt: skip
    """Output length along one axis, as ONNX Conv defines it."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


#: A prepared layer call: ``runner(x, residual)`` for one input shape (see the ``plan_*``).
Runner = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


def _f32(x: np.ndarray) -> np.ndarray:
    """``x`` itself when it is C-contiguous float32 (the usual case), else a converted copy."""
    if x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    return np.ascontiguousarray(x, dtype=np.float32)


def _optional_f32(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else _f32(x)


def planned_input(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``x`` as float32 C-contiguous, checked against the shape its runner was planned for."""
    data = _f32(x)
    if data.shape != tuple(shape):
        raise ValueError(f"planned for input {tuple(shape)}, got {data.shape}")
    return data


def conv_output_hw(height: int, width: int, geometry: ConvGeometry) -> tuple[int, int]:
    """(Hout, Wout) of a 2-D convolution with this geometry, as ONNX Conv defines them."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = geometry
    return (
        conv_output_size(height, kh, sh, pt, pb, dh),
        conv_output_size(width, kw, sw, pl, pr, dw),
    )


def sparse_conv2d(
    x: np.ndarray,
    weights: SparseMatrix,
    kernel_shape: Sequence[int],
    strides: Sequence[int] = (1, 1),
    pads: Sequence[int] = (0, 0, 0, 0),
    dilations: Sequence[int] = (1, 1),
    bias: np.ndarray | None = None,
    clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
    residual: np.ndarray | None = None,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Ungrouped 2-D convolution (NCHW) with sparse weights packed as (Cout, Cin * kh * kw).

    1x1 stride-1 unpadded convolutions run directly on the input (channels are the K axis,
    pixels the N axis); every other shape goes through im2col first.

    Args:
        x: (B, Cin, H, W) float32.
        weights: packed ``W.reshape(Cout, -1)`` of an ONNX Conv weight.
        kernel_shape, strides, pads, dilations: ONNX Conv attributes (pads: top, left, bottom,
            right).
        bias, clip, threads, isa, residual: as in :func:`spmm` (residual: (B, Cout, Hout, Wout)).
        workspace: where to keep the im2col and output arrays between calls; the result is
            then a view of the workspace, overwritten by the next call.

    Returns:
        (B, Cout, Hout, Wout) float32.
    """
    geometry = (tuple(kernel_shape), tuple(strides), tuple(pads), tuple(dilations))
    run = plan_sparse_conv2d(x.shape, weights, geometry, bias, clip, threads, isa, workspace)
    return run(x, residual)


def plan_sparse_conv2d(
    shape: Sequence[int],
    weights: SparseMatrix,
    geometry: ConvGeometry,
    bias: np.ndarray | None = None,
    clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
    workspace: Workspace | None = None,
) -> Runner:
    """:func:`sparse_conv2d` for inputs of ``shape``, with every shape-dependent argument worked
    out once: the runner only passes its arrays to the C kernel (microseconds per layer)."""
    batch, channels, height, width = shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = geometry
    m, k = weights.shape
    if k != channels * kh * kw:
        raise ValueError(f"weights have {k} columns, expected {channels * kh * kw}")
    oh, ow = conv_output_hw(height, width, geometry)
    direct = (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
    cols = None if direct else _array(workspace, "im2col", (batch, k, oh * ow))
    out = _array(workspace, "out", (batch, m, oh, ow))
    lo, hi = _activation_bounds(clip)
    br, bc = weights.block_shape
    bias_data = _optional_f32(bias)
    threads, isa_code = max(int(threads), 1), _isa_code(isa)

    def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        data = planned_input(x, shape)
        if cols is not None:
            for image in range(batch):
                _ext.im2col(data[image], cols[image], channels, height, width, kh, kw, sh, sw,
                            pt, pl, dh, dw, oh, ow, threads)  # fmt: skip
        _ext.spmm(
            m, k, oh * ow, br, bc, weights.block_ptr, weights.block_col, weights.values,
            data if cols is None else cols, out, bias_data, _optional_f32(residual), batch, lo, hi,
            threads, isa_code,
        )  # fmt: skip
        return out

    return run


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
    out = _array(workspace, "out", (batch, channels, oh, ow))
    weight_data, bias_data = _f32(weight), _optional_f32(bias)
    lo, hi = _activation_bounds(clip)
    threads, isa_code = max(int(threads), 1), _isa_code(isa)

    def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        data = planned_input(x, shape)
        _ext.depthwise(
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
    out = _array(workspace, "out", (batch, pm or m, oh, ow))
    lo, hi = _activation_bounds(clip)
    dw_lo, dw_hi = _activation_bounds(dw_clip)
    p_lo, p_hi = _activation_bounds(project_clip)
    p_arrays = (None, None, None) if project is None else (
        project.block_ptr, project.block_col, project.values
    )  # fmt: skip
    p_bias = _optional_f32(project_bias)
    br, bc = weights.block_shape
    bias_data, dw_data, dw_bias_data = _optional_f32(bias), _f32(dw_weight), _optional_f32(dw_bias)
    threads, isa_code = max(int(threads), 1), _isa_code(isa)

    def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        data = planned_input(x, shape)
        _ext.conv_depthwise(
            m, k, br, bc, weights.block_ptr, weights.block_col, weights.values, bias_data, lo, hi,
            channels, height, width, ckh, ckw, csh, csw, cpt, cpl, cdh, cdw, data, dw_data,
            dw_bias_data, out, batch, mid_h, mid_w, oh, ow, kh, kw, strides[0], strides[1],
            pt, pl, pb, pr, dilations[0], dilations[1], dw_lo, dw_hi, threads, isa_code,
            pm, pbr, pbc, *p_arrays, p_bias, p_lo, p_hi,
            None if project is None else _optional_f32(residual),
        )  # fmt: skip
        return out

    return run
