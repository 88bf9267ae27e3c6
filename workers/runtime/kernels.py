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


def set_thread_spin(microseconds: int) -> int:
    """Set how long the kernels' idle pool threads spin before sleeping; returns the old value.

    After a parallel call each worker spins (yielding its core to any other runnable thread)
    for this long, then sleeps: a call within the spin finds it awake, one after it waits for a
    wake-up (~0.5 ms on a VM whose idle vCPU halts). Default 300, or the environment variable
    ``SPARSEARCH_SPIN_US`` read when the first parallel call starts; 0 sleeps at once.
    """
    return int(_ext.set_thread_spin(int(microseconds)))


def resolve_isa_code(isa: Isa | None) -> int:
    """The extension's code for ``isa`` (or the SPARSEARCH_KERNEL_ISA environment choice)."""
    chosen = isa or os.environ.get("SPARSEARCH_KERNEL_ISA", "auto")
    if chosen not in _ISA_CODES:
        raise ValueError(f"unknown instruction set {chosen!r}; use one of {sorted(_ISA_CODES)}")
    return _ISA_CODES[chosen]


def selected_isa(isa: Isa | None = None) -> str:
    """The instruction set a kernel call with this ``isa`` argument runs on this machine."""
    info = build_info()
    if resolve_isa_code(isa) != 0 and info["avx2_fma_compiled"] and info["cpu_avx2_fma"]:
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


def workspace_array(workspace: Workspace | None, role: str, shape: tuple[int, ...]) -> np.ndarray:
    """The workspace's array for ``role``, or a fresh aligned one without a workspace."""
    return workspace.get(role, shape) if workspace else aligned_empty(shape)


def activation_bounds(clip: tuple[float, float] | None) -> tuple[float, float]:
    """Clip bounds as the kernels take them (unbounded without a clip)."""
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
        threads: threads from the kernels' pool (1 = the calling thread only; see
            :func:`set_thread_spin`).
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
    lo, hi = activation_bounds(clip)
    br, bc = weights.block_shape
    _ext.spmm(
        m, k, n, br, bc, weights.block_ptr, weights.block_col, weights.values, data, out,
        bias_data, residual_data, batch, lo, hi, max(int(threads), 1), resolve_isa_code(isa),
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
    out = workspace_array(workspace, "out", (m, rows))
    bias_data = optional_f32(bias)
    lo, hi = activation_bounds(clip)
    br, bc = weights.block_shape
    threads, isa_code = max(int(threads), 1), resolve_isa_code(isa)

    def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        columns = as_f32(planned_input(x, shape).reshape(rows, k).T)
        residual_t = None if residual is None else as_f32(residual.reshape(rows, m).T)
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


def as_f32(x: np.ndarray) -> np.ndarray:
    """``x`` itself when it is C-contiguous float32 (the usual case), else a converted copy."""
    if x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    return np.ascontiguousarray(x, dtype=np.float32)


def optional_f32(x: np.ndarray | None) -> np.ndarray | None:
    """:func:`as_f32` of an optional array (bias, residual)."""
    return None if x is None else as_f32(x)


def planned_input(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``x`` as float32 C-contiguous, checked against the shape its runner was planned for."""
    data = as_f32(x)
    if data.shape != tuple(shape):
        raise ValueError(f"planned for input {tuple(shape)}, got {data.shape}")
    return data


def conv_output_hw(height: int, width: int, geometry: ConvGeometry) -> tuple[int, int]:
    """(Hout, Wout) of a 2-D convolution with this geometry, as ONNX Conv defines them.

    Raises:
        ValueError: the (dilated) filter does not fit the padded input, so no output pixel exists.
    """
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = geometry
    out_h = conv_output_size(height, kh, sh, pt, pb, dh)
    out_w = conv_output_size(width, kw, sw, pl, pr, dw)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"a {kh}x{kw} filter (dilation {dh}x{dw}) does not fit a {height}x{width} input "
            f"padded {(pt, pl, pb, pr)} (top, left, bottom, right): the output would be "
            f"{out_h}x{out_w}"
        )
    return out_h, out_w


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
    cols = None if direct else workspace_array(workspace, "im2col", (batch, k, oh * ow))
    out = workspace_array(workspace, "out", (batch, m, oh, ow))
    lo, hi = activation_bounds(clip)
    br, bc = weights.block_shape
    bias_data = optional_f32(bias)
    threads, isa_code = max(int(threads), 1), resolve_isa_code(isa)

    def run(x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        data = planned_input(x, shape)
        if cols is not None:
            for image in range(batch):
                _ext.im2col(data[image], cols[image], channels, height, width, kh, kw, sh, sw,
                            pt, pl, dh, dw, oh, ow, threads)  # fmt: skip
        _ext.spmm(
            m, k, oh * ow, br, bc, weights.block_ptr, weights.block_col, weights.values,
            data if cols is None else cols, out, bias_data, optional_f32(residual), batch, lo, hi,
            threads, isa_code,
        )  # fmt: skip
        return out

    return run
