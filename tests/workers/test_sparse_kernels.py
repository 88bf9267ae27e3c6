"""Every sparse format against NumPy dense: shapes, sparsities, edge cases, fusion, threads, ISA."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from workers.runtime import depthwise_kernels, kernels
from workers.runtime.sparse_formats import BLOCK_SHAPES, pack, sparsify, to_dense

FORMATS = sorted(BLOCK_SHAPES)
ISAS = ["auto", "portable"]
SHAPES = [(1, 4, 1), (3, 5, 7), (7, 9, 37), (16, 16, 64), (33, 13, 100), (64, 96, 203)]


def _reference(w: np.ndarray, x: np.ndarray, bias: np.ndarray | None, clip) -> np.ndarray:
    y = w.astype(np.float64) @ x.astype(np.float64)
    if bias is not None:
        y += bias[:, None]
    if clip is not None:
        y = np.clip(y, *clip)
    return y


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.97])
def test_pack_roundtrip_and_spmm_matches_dense(fmt: str, shape, sparsity: float) -> None:
    m, k, n = shape
    if k < BLOCK_SHAPES[fmt][1]:
        pytest.skip("fewer columns than the block width")
    rng = np.random.default_rng(zlib.crc32(repr((fmt, shape, sparsity)).encode()))
    w = sparsify(rng.standard_normal((m, k)), sparsity, BLOCK_SHAPES[fmt])
    x = rng.standard_normal((k, n)).astype(np.float32)
    packed = pack(w, fmt)
    assert np.array_equal(to_dense(packed), w)
    np.testing.assert_allclose(kernels.spmm(packed, x), _reference(w, x, None, None), atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("clip", [None, (0.0, np.inf), (0.0, 6.0), (-1.0, 1.0)])
@pytest.mark.parametrize("n", [77, 601])  # threads split rows, then columns
def test_bias_activation_threads_and_isa(fmt: str, isa: str, threads: int, clip, n: int) -> None:
    rng = np.random.default_rng(7)
    m, k = 37, 24
    w = sparsify(rng.standard_normal((m, k)), 0.8, BLOCK_SHAPES[fmt])
    x = rng.standard_normal((2, k, n)).astype(np.float32) * 3
    bias = rng.standard_normal(m).astype(np.float32)
    y = kernels.spmm(pack(w, fmt), x, bias, clip, threads=threads, isa=isa)  # type: ignore[arg-type]
    for image in range(2):
        np.testing.assert_allclose(y[image], _reference(w, x[image], bias, clip), atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_edge_cases_empty_rows_all_zero_and_single_column(fmt: str) -> None:
    rng = np.random.default_rng(3)
    bias = np.arange(10, dtype=np.float32)
    w = rng.standard_normal((10, 8)).astype(np.float32)
    w[2:7] = 0.0  # empty rows (and empty row blocks)
    x = rng.standard_normal((8, 9)).astype(np.float32)
    np.testing.assert_allclose(
        kernels.spmm(pack(w, fmt), x, bias), _reference(w, x, bias, None), atol=1e-4
    )
    zero = np.zeros((10, 8), dtype=np.float32)
    packed_zero = pack(zero, fmt)
    assert packed_zero.stored_values == 0
    y = kernels.spmm(packed_zero, x, bias, (0.0, 5.0), threads=2)
    np.testing.assert_array_equal(y, np.clip(np.broadcast_to(bias[:, None], (10, 9)), 0, 5))
    assert kernels.spmm(pack(w, fmt), x[:, :0]).shape == (10, 0)


@pytest.mark.parametrize("threads", [2, 3])
def test_row_split_balances_skewed_rows(threads: int) -> None:
    """Rows split by stored blocks: a few dense rows among empty ones still come out right."""
    rng = np.random.default_rng(19)
    w = np.zeros((40, 32), dtype=np.float32)
    w[:3] = rng.standard_normal((3, 32))
    w[37] = rng.standard_normal(32)
    x = rng.standard_normal((32, 50)).astype(np.float32)
    for fmt in FORMATS:
        y = kernels.spmm(pack(w, fmt), x, threads=threads)
        np.testing.assert_allclose(y, _reference(w, x, None, None), atol=1e-4)


def test_portable_path_is_forced_by_argument_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert kernels.selected_isa("portable") == "portable"
    monkeypatch.setenv("SPARSEARCH_KERNEL_ISA", "portable")
    assert kernels.selected_isa() == "portable"
    monkeypatch.setenv("SPARSEARCH_KERNEL_ISA", "bogus")
    with pytest.raises(ValueError):
        kernels.selected_isa()


def test_auto_uses_avx2_when_the_cpu_has_it() -> None:
    info = kernels.build_info()
    expected = "avx2" if info["avx2_fma_compiled"] and info["cpu_avx2_fma"] else "portable"
    assert kernels.selected_isa("auto") == expected


def test_bad_arguments_are_rejected() -> None:
    packed = pack(np.eye(4, dtype=np.float32), "csr")
    with pytest.raises(ValueError):
        kernels.spmm(packed, np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        kernels.spmm(packed, np.zeros((4, 3), dtype=np.float32), bias=np.zeros(3))
    with pytest.raises(ValueError):
        pack(np.zeros((4, 2)), "4x4")
    with pytest.raises(ValueError):
        pack(np.zeros((4, 4)), "2x2")
    conv_weights = pack(np.ones((4, 18), dtype=np.float32), "csr")  # 4 x (2 channels x 3x3)
    with pytest.raises(ValueError, match=r"3x3 filter \(dilation 2x2\) does not fit a 4x4 input"):
        kernels.sparse_conv2d(
            np.ones((1, 2, 4, 4), np.float32), conv_weights, (3, 3), dilations=(2, 2)
        )


@pytest.mark.parametrize("fmt", ["csr", "4x4"])
def test_sparse_linear_matches_numpy(fmt: str) -> None:
    rng = np.random.default_rng(5)
    w = sparsify(rng.standard_normal((30, 20)), 0.7, BLOCK_SHAPES[fmt])
    x = rng.standard_normal((2, 3, 20)).astype(np.float32)
    bias = rng.standard_normal(30).astype(np.float32)
    y = kernels.sparse_linear(x, pack(w, fmt), bias, (0.0, np.inf), threads=2)
    np.testing.assert_allclose(y, np.maximum(x @ w.T + bias, 0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kernel,stride,pads,dilation",
    [((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)), ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
     ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), ((3, 3), (2, 2), (1, 0, 0, 1), (1, 1)),
     ((3, 1), (1, 2), (1, 0, 2, 0), (2, 1)), ((5, 5), (1, 1), (2, 2, 2, 2), (1, 1))],
)  # fmt: skip
def test_sparse_conv2d_matches_torch(kernel, stride, pads, dilation) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    cin, cout = 6, 10
    w = sparsify(rng.standard_normal((cout, cin * kernel[0] * kernel[1])), 0.6, (4, 1))
    x = rng.standard_normal((2, cin, 11, 9)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    y = kernels.sparse_conv2d(x, pack(w, "4x1"), kernel, stride, pads, dilation, bias, threads=2)
    padded = torch.nn.functional.pad(torch.from_numpy(x), (pads[1], pads[3], pads[0], pads[2]))
    ref = torch.nn.functional.conv2d(
        padded, torch.from_numpy(w.reshape(cout, cin, *kernel)), torch.from_numpy(bias),
        stride=stride, dilation=dilation,
    )  # fmt: skip
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-4, atol=1e-4)


def _torch_depthwise(x, w, bias, stride, pads, clip):
    torch = pytest.importorskip("torch")
    padded = torch.nn.functional.pad(torch.from_numpy(x), (pads[1], pads[3], pads[0], pads[2]))
    ref = torch.nn.functional.conv2d(
        padded, torch.from_numpy(w), torch.from_numpy(bias), stride=stride, groups=x.shape[1]
    )
    return ref.clamp(*clip).numpy()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "channels,size,kernel,stride,pads",
    [(5, (3, 3), 3, 1, (1, 1, 1, 1)), (7, (20, 17), 5, 2, (2, 2, 2, 2)), (3, (9, 9), 3, 3, (1, 0, 0, 1)),
     (4, (12, 40), 3, 2, (1, 1, 1, 1)), (6, (10, 6), 3, 1, (0, 0, 0, 0)), (2, (33, 70), 3, 1, (1, 1, 1, 1))],
)  # fmt: skip
def test_depthwise_matches_torch(isa: str, channels, size, kernel, stride, pads) -> None:
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, channels, *size)).astype(np.float32)
    w = rng.standard_normal((channels, 1, kernel, kernel)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    y = depthwise_kernels.depthwise_conv2d(
        x,
        w,
        (stride, stride),
        pads,
        (1, 1),
        bias,
        (0.0, 6.0),
        threads=2,
        isa=isa,  # type: ignore[arg-type]
    )
    expected = _torch_depthwise(x, w, bias, stride, pads, (0.0, 6.0))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_fused_residual_and_workspace_reuse() -> None:
    rng = np.random.default_rng(17)
    w = sparsify(rng.standard_normal((12, 8)), 0.5, (4, 1))
    x = rng.standard_normal((1, 8, 5, 7)).astype(np.float32)
    residual = rng.standard_normal((1, 12, 5, 7)).astype(np.float32)
    workspace = kernels.Workspace()
    first = kernels.sparse_conv2d(x, pack(w, "4x1"), (1, 1), residual=residual, workspace=workspace)
    expected = np.einsum("oc,bchw->bohw", w, x) + residual
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-4)
    second = kernels.sparse_conv2d(2 * x, pack(w, "4x1"), (1, 1), workspace=workspace)
    assert np.shares_memory(first, second)  # the workspace array is reused, not reallocated
    np.testing.assert_allclose(second, 2 * np.einsum("oc,bchw->bohw", w, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(
    "pads", [(1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 1, 0), (1, 0, 0, 1), (0, 1, 2, 1), (2, 1, 0, 1)]
)
@pytest.mark.parametrize("width", [1, 3, 6, 7, 8, 9, 10, 12, 14, 16, 17, 28, 31, 33, 56, 113])
def test_depthwise_3x3_fast_path_widths_strides_pads(isa: str, stride: int, pads, width) -> None:
    """The 3x3 paths: rows narrower than a vector, remainder groups, odd left padding, and
    same-padded stride-1 rows read in place (pads (*, 1, *, 1)), with uneven top/bottom."""
    rng = np.random.default_rng(width * 10 + stride)
    height = 5 + width % 4
    x = rng.standard_normal((2, 3, height, width)).astype(np.float32)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    clip = (-1.0, 2.0)
    if width + pads[1] + pads[3] < 3:  # no output column: refused, naming the geometry
        with pytest.raises(ValueError, match=rf"does not fit a {height}x{width} input"):
            depthwise_kernels.depthwise_conv2d(x, w, (stride, stride), pads, isa=isa)  # type: ignore[arg-type]
        return
    y = depthwise_kernels.depthwise_conv2d(
        x, w, (stride, stride), pads, (1, 1), bias, clip, threads=2, isa=isa,  # type: ignore[arg-type]
    )  # fmt: skip
    expected = _torch_depthwise(x, w, bias, stride, pads, clip)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_depthwise_3x3_reuses_scratch_across_planes_and_calls() -> None:
    """Planes of one call share a scratch, and calls reuse the thread's scratch: padding written
    as data by one plane, path or geometry must read as zero in the next."""
    rng = np.random.default_rng(5)
    workspace = kernels.Workspace()
    for stride, size in [(1, (11, 10)), (2, (11, 10)), (2, (30, 41)), (1, (7, 7)), (2, (9, 33)),
                         (1, (40, 12)), (1, (11, 10))]:  # fmt: skip
        x = (rng.standard_normal((3, 16, *size)) + 5).astype(np.float32)  # borders would leak
        w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
        bias = np.zeros(16, dtype=np.float32)
        y = depthwise_kernels.depthwise_conv2d(x, w, (stride, stride), (1, 1, 1, 1), (1, 1), bias,
                                     None, threads=1, workspace=workspace)  # fmt: skip
        expected = _torch_depthwise(x, w, bias, stride, (1, 1, 1, 1), (-np.inf, np.inf))
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4, err_msg=str((stride, size)))


CONV_DEPTHWISE_CASES = [
    # channels, mid channels, image size, first conv (kernel, stride, pad), depthwise stride, kernel
    (5, 13, (9, 7), (1, 1, 0), 1, 3),
    (8, 20, (112, 112), (1, 1, 0), 2, 3),
    (6, 12, (30, 31), (1, 1, 0), 1, 3),
    (4, 9, (10, 11), (1, 1, 0), 2, 5),
    (4, 64, (64, 200), (1, 1, 0), 1, 3),  # many bands
    (4, 48, (40, 150), (1, 1, 0), 1, 5),
    (3, 16, (224, 224), (3, 2, 1), 1, 3),  # MobileNet's stem + first depthwise, im2col per band
    (3, 12, (33, 29), (3, 1, 0), 2, 3),
    (2, 8, (20, 21), (5, 2, 2), 1, 3),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("project", [False, True])
@pytest.mark.parametrize("channels,mid,size,first,stride,kernel", CONV_DEPTHWISE_CASES)
def test_conv_depthwise_equals_the_layers_one_by_one(
    fmt: str, isa: str, threads: int, project: bool, channels, mid, size, first, stride, kernel
) -> None:
    """Fused conv + depthwise (+ 1x1 project with residual) == one after the other, in bands,
    pointwise or through im2col; with a project, threads take whole bands."""
    rng = np.random.default_rng(mid * 7 + stride)
    ck, cs, cp = first
    if channels * ck * ck < BLOCK_SHAPES[fmt][1] or mid < BLOCK_SHAPES[fmt][1]:
        pytest.skip("fewer columns than the block width")
    w = sparsify(rng.standard_normal((mid, channels * ck * ck)), 0.6, BLOCK_SHAPES[fmt])
    x = rng.standard_normal((2, channels, *size)).astype(np.float32)
    bias = rng.standard_normal(mid).astype(np.float32)
    dw = rng.standard_normal((mid, 1, kernel, kernel)).astype(np.float32)
    dw_bias = rng.standard_normal(mid).astype(np.float32)
    pad = kernel // 2
    conv = ((ck, ck), (cs, cs), (cp,) * 4, (1, 1))
    depthwise = ((kernel, kernel), (stride, stride), (pad,) * 4, (1, 1))
    clip, packed = (0.0, 6.0), pack(w, fmt)
    middle = kernels.sparse_conv2d(
        x, packed, (ck, ck), (cs, cs), (cp,) * 4, bias=bias, clip=clip, isa=isa,  # type: ignore[arg-type]
    )  # fmt: skip
    expected = _torch_depthwise(middle, dw, dw_bias, stride, (pad,) * 4, (-1.0, 4.0))
    extra: dict = {}
    residual = None
    if project:
        pw = sparsify(rng.standard_normal((11, mid)), 0.6, BLOCK_SHAPES[fmt])
        p_bias = rng.standard_normal(11).astype(np.float32)
        residual = rng.standard_normal((2, 11, *expected.shape[2:])).astype(np.float32)
        extra = {"project": pack(pw, fmt), "project_bias": p_bias, "project_clip": (-2.0, 3.0)}
        flat = np.einsum("oc,bchw->bohw", pw, expected) + p_bias[:, None, None] + residual
        expected = np.clip(flat, -2.0, 3.0)
    fused = depthwise_kernels.plan_conv_depthwise(
        x.shape, packed, bias, clip, dw, conv, depthwise, dw_bias, (-1.0, 4.0), threads=threads,
        isa=isa, **extra,  # type: ignore[arg-type]
    )(x, residual)  # fmt: skip
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("isa", ISAS)
def test_every_column_count_splits_into_tiles_exactly(fmt: str, isa: str) -> None:
    """Columns 1..140: balanced tile widths, overlapped last vectors and panel edges."""
    rng = np.random.default_rng(23)
    w = sparsify(rng.standard_normal((9, 24)), 0.7, BLOCK_SHAPES[fmt])
    packed = pack(w, fmt)
    for n in range(1, 141):
        x = rng.standard_normal((24, n)).astype(np.float32)
        for threads in (1, 2):
            y = kernels.spmm(packed, x, threads=threads, isa=isa)  # type: ignore[arg-type]
            np.testing.assert_allclose(y, _reference(w, x, None, None), atol=1e-4, err_msg=str(n))


@pytest.mark.parametrize("fmt", ["csr", "4x1"])
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,k", [(1, 3), (5, 40), (40, 5), (70, 33)])
def test_strips_and_in_place_tiles_agree_with_dense(
    fmt: str, isa: str, threads: int, m: int, k: int
) -> None:
    """CSR and 4x1 copy X in strips when rows reuse it enough (2 and 24 weights per row of X)
    and run in place otherwise: densities on both sides of that switch, empty rows, residual,
    odd widths, a last block row with missing rows (m = 5, 70)."""
    rng = np.random.default_rng(m * 1000 + k)
    for density in (0.02, 0.3, 1.0):
        w = (rng.standard_normal((m, k)) * (rng.random((m, k)) < density)).astype(np.float32)
        w[::9] = 0.0  # empty rows (and empty 4x1 block rows where 4 in a row are empty)
        w[8:16] = 0.0
        packed = pack(w, fmt)
        for n in (5, 8, 31, 33, 64, 100, 257):
            x = rng.standard_normal((k, n)).astype(np.float32)
            residual = rng.standard_normal((m, n)).astype(np.float32)
            bias = rng.standard_normal(m).astype(np.float32)
            y = kernels.spmm(packed, x, bias, (-1.0, 2.0), threads, isa, residual=residual)  # type: ignore[arg-type]
            expected = np.clip(_reference(w, x, bias, None) + residual, -1.0, 2.0)
            np.testing.assert_allclose(y, expected, atol=1e-4, err_msg=f"{density} {n}")


def test_workspace_arrays_are_64_byte_aligned() -> None:
    workspace = kernels.Workspace()
    for shape in [(1, 3, 5, 7), (13,), (2, 49)]:
        array = workspace.get(f"role{len(shape)}", shape)
        assert array.shape == shape and array.dtype == np.float32 and array.flags.c_contiguous
        assert array.ctypes.data % 64 == 0
