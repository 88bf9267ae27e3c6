"""Python face of the compiled sparse kernels: sparse matmul, 1x1/KxK convolution and linear.

Every call takes a thread count and an instruction-set choice explicitly, so measurements state
what they ran. The instruction set defaults to the best one the CPU reports (AVX2+FMA, else the
portable build); ``SPARSEARCH_KERNEL_ISA=portable`` or ``isa="portable"`` forces the fallback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

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
_ISA_CODES = {"portable": 0, "avx2": 1, "auto": -1}
_ISA_NAMES = {0: "portable", 1: "avx2"}


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
) -> np.ndarray:
    """``clip(W @ x + bias)`` for sparse W (M, K) and dense x (K, N) or a batch (B, K, N).

    Args:
        weights: packed (M, K) matrix.
        x: float32 (K, N) or (B, K, N); N is the axis the kernel vectorises (pixels, tokens).
        bias: optional (M,) added before the activation.
        clip: fused activation bounds, (0, inf) for Relu, (0, 6) for Relu6; None for identity.
        threads: OpenMP threads (1 = no parallel region).
        isa: "auto", "avx2" (used only when the CPU supports it) or "portable".
        out: optional float32 C-contiguous output to write into.

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
    lo, hi = _activation_bounds(clip)
    br, bc = weights.block_shape
    _ext.spmm(
        m, k, n, br, bc, weights.block_ptr, weights.block_col, weights.values, data, out,
        bias_data, batch, lo, hi, max(int(threads), 1), _isa_code(isa),
    )  # fmt: skip
    return out


def sparse_linear(
    x: np.ndarray,
    weights: SparseMatrix,
    bias: np.ndarray | None = None,
    clip: tuple[float, float] | None = None,
    threads: int = 1,
    isa: Isa | None = None,
) -> np.ndarray:
    """``clip(x @ W.T + bias)`` for x (..., K) and sparse W (M, K): Gemm(transB=1) and Linear.

    The kernel vectorises over rows of x, so x is transposed to (K, rows) first; that copy is
    O(rows * K) against O(rows * K * M * density) multiply-adds.
    """
    m, k = weights.shape
    lead = x.shape[:-1]
    rows = x.reshape(-1, k).T
    result = spmm(weights, rows, bias, clip, threads, isa)
    return np.ascontiguousarray(result.T).reshape(*lead, m)


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                     dilation: int) -> int:  # fmt: skip
    """Output length along one axis, as ONNX Conv defines it."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


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
) -> np.ndarray:
    """Ungrouped 2-D convolution (NCHW) with sparse weights packed as (Cout, Cin * kh * kw).

    1x1 stride-1 unpadded convolutions run directly on the input (channels are the K axis,
    pixels the N axis); every other shape goes through im2col first.

    Args:
        x: (B, Cin, H, W) float32.
        weights: packed ``W.reshape(Cout, -1)`` of an ONNX Conv weight.
        kernel_shape, strides, pads, dilations: ONNX Conv attributes (pads: top, left, bottom,
            right).
        bias, clip, threads, isa: as in :func:`spmm`.

    Returns:
        (B, Cout, Hout, Wout) float32.
    """
    batch, channels, height, width = x.shape
    kh, kw = kernel_shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    if weights.shape[1] != channels * kh * kw:
        raise ValueError(f"weights have {weights.shape[1]} columns, expected {channels * kh * kw}")
    oh = conv_output_size(height, kh, sh, pt, pb, dh)
    ow = conv_output_size(width, kw, sw, pl, pr, dw)
    data = np.ascontiguousarray(x, dtype=np.float32)
    direct = (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
    if direct:
        cols = data.reshape(batch, channels, height * width)
    else:
        cols = np.empty((batch, channels * kh * kw, oh * ow), dtype=np.float32)
        for image in range(batch):
            _ext.im2col(data[image], cols[image], channels, height, width, kh, kw, sh, sw,
                        pt, pl, dh, dw, oh, ow, max(int(threads), 1))  # fmt: skip
    result = spmm(weights, cols, bias, clip, threads, isa)
    return result.reshape(batch, weights.shape[0], oh, ow)
