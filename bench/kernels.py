"""Sparse kernel speed-ups over dense MKL GEMM, per shape, sparsity, format and thread count.

``python bench/kernels.py [--quick] [--repeats N]`` prints markdown tables. Each (M, K, N) is a 1x1
convolution / linear layer: W is M x K (output x input channels), X is K x N (pixels or tokens).
Every entry is a median over rounds of dense-time / candidate-time, the two timed alternately in
the same process (``workers.runtime.latency.compare_latency``), and every output is checked
against the dense product. "~" marks a noisy ratio (p10-p90 spread > 10% or a loaded machine).
Every runner reads the same 64-byte-aligned input and writes into an output of its own made
once, as the executor runs the kernels (its workspaces are aligned and reused).
Baselines: onnxruntime (MatMul with the zeros in a dense initializer, the way it runs pruned
weights) and torch's CSR (MKL sparse); the last column is the dense GEMM's own throughput. On a
CPU with AVX-512, ``MKL_ENABLE_INSTRUCTIONS=AVX2`` makes the dense baseline an AVX2 one, like the
kernels. 2:4 on CPU runs as CSR at 50% (no CPU instruction for it).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Read by torch's OpenMP runtime when it loads (the kernels have a pool of their own): idle
# threads spin ~tens of microseconds, not ~milliseconds, so alternating runners with separate
# thread pools do not take each other's cores.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from workers.runtime import kernels  # noqa: E402
from workers.runtime.executor import session_options  # noqa: E402
from workers.runtime.latency import LatencyComparison, compare_latency  # noqa: E402
from workers.runtime.nm_sparsity import nm_mask, nm_to_cpu_format, pack_nm  # noqa: E402
from workers.runtime.sparse_formats import BLOCK_SHAPES, pack, sparsify  # noqa: E402

SHAPES = [(128, 128, 3136), (256, 256, 784), (512, 512, 196), (1024, 1024, 49), (768, 768, 512)]
QUICK_SHAPES = [(256, 256, 784), (512, 512, 196)]
SPARSITIES = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95]
FORMATS = ["csr", "4x1", "8x1", "4x4"]


def ort_matmul(weight: np.ndarray, threads: int):
    """An onnxruntime session computing weight @ x with the weight as a dense initializer."""
    m, k = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["w", "x"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [k, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, None])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    options = session_options(threads, spinning=False)  # see GOMP_SPINCOUNT above
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return lambda feeds: session.run(None, {"x": feeds["x"]})


def torch_dense(weight: np.ndarray, threads: int):
    """MKL's dense GEMM into one output reused across calls, as ours writes into one: a fresh
    output per call would charge the baseline an allocation (~6% on 128x128x3136). The empty
    ``out`` takes its shape in the first (untimed) call."""
    w = torch.from_numpy(weight)
    out = torch.empty(0)

    def run(feeds):
        torch.set_num_threads(threads)
        return [torch.mm(w, torch.from_numpy(feeds["x"]), out=out).numpy()]

    return run


def torch_csr(weight: np.ndarray, threads: int):
    w = torch.from_numpy(weight).to_sparse_csr()

    def run(feeds):
        torch.set_num_threads(threads)
        return [torch.sparse.mm(w, torch.from_numpy(feeds["x"])).numpy()]

    return run


def ours(matrix, threads: int, n: int):
    out = kernels.aligned_empty((matrix.shape[0], n))
    return lambda feeds: [kernels.spmm(matrix, feeds["x"], threads=threads, out=out)]


def aligned_input(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """A random (K, N) input on a 64-byte boundary, as the executor's workspaces give the
    kernels (NumPy's own arrays start 16 bytes off a cache line here, which costs the kernels
    5-15%: bench/results/spmm_tuning_epyc_2cores.md). Every runner gets the same array."""
    x = kernels.aligned_empty((k, n))
    x[...] = rng.standard_normal((k, n), dtype=np.float32)
    return x


def cell(result: LatencyComparison) -> str:
    if not result.outputs_match:
        return f"WRONG ({result.max_rel_error:.1e})"
    return f"{'~' if result.noisy else ''}{result.speedup:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--sparsities",
        type=float,
        nargs="+",
        default=None,
        help=f"fractions of zeros to time (default {SPARSITIES})",
    )
    args = parser.parse_args()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = args.repeats or (8 if args.quick else 20)
    rng = np.random.default_rng(0)
    print(f"kernels ISA: {kernels.selected_isa()}, build: {kernels.build_info()}, "
          f"onnxruntime {ort.__version__}, torch {torch.__version__}")  # fmt: skip
    for threads in args.threads:
        print(f"\n### {threads} thread(s): speed-up over dense MKL GEMM (torch.mm)\n")
        header = ["M x K x N", "sparsity", "limit", *FORMATS, "torch CSR", "onnxruntime",
                  "dense GMAC/s"]  # fmt: skip
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for m, k, n in shapes:
            weight_dense = rng.standard_normal((m, k)).astype(np.float32)
            feeds = {"x": aligned_input(rng, k, n)}
            for sparsity in args.sparsities or SPARSITIES:
                row = [f"{m}x{k}x{n}", f"{sparsity:.0%}", f"{1 / (1 - sparsity):.1f}x"]
                dense_ms = []
                for fmt in FORMATS:
                    weight = sparsify(weight_dense, sparsity, BLOCK_SHAPES[fmt])
                    result = compare_latency(
                        ours(pack(weight, fmt), threads, n), torch_dense(weight, threads), feeds,
                        warmup=2, repeats=repeats,
                    )  # fmt: skip
                    row.append(cell(result))
                    dense_ms.append(result.reference.median_ms)
                weight = sparsify(weight_dense, sparsity)
                dense = torch_dense(weight, threads)
                for make in (torch_csr, ort_matmul):
                    result = compare_latency(
                        make(weight, threads), dense, feeds, warmup=2, repeats=repeats
                    )
                    row.append(cell(result))
                row.append(f"{m * k * n / np.median(dense_ms) / 1e6:.1f}")
                print("| " + " | ".join(row) + " |", flush=True)
            pruned = weight_dense * nm_mask(weight_dense)
            result = compare_latency(
                ours(nm_to_cpu_format(pack_nm(pruned)), threads, n), torch_dense(pruned, threads),
                feeds, warmup=2, repeats=repeats,
            )  # fmt: skip
            print(f"| {m}x{k}x{n} | 2:4 (as CSR) | 2.0x | {cell(result)} | | | | | | |", flush=True)
    if len(args.threads) > 1 and 1 in args.threads:
        thread_scaling(shapes, max(args.threads), repeats)


def thread_scaling(shapes: list[tuple[int, int, int]], threads: int, repeats: int) -> None:
    """time(1 thread) / time(N threads) at 90%, the two runners timed alternately.

    Two ways per cell: "steady" rounds of 8 back-to-back calls after one untimed call (consecutive
    layers or a serving loop: the workers are awake and each core's share of the data is in its
    own cache) and "single" rounds of one call each, right after the other runner's call, so
    the workers start from the data the 1-thread call left in the calling core's cache.
    """
    rng = np.random.default_rng(1)
    print(f"\n### Thread scaling at 90%: time(1 thread) / time({threads} threads), interleaved")
    print("\nEach cell: steady state (rounds of 8 back-to-back calls) / single calls.\n")
    print("| M x K x N | " + " | ".join(FORMATS) + " |")
    print("|---|" + "---|" * len(FORMATS))
    for m, k, n in shapes:
        weight_dense = rng.standard_normal((m, k)).astype(np.float32)
        feeds = {"x": aligned_input(rng, k, n)}
        cells = []
        for fmt in FORMATS:
            matrix = pack(sparsify(weight_dense, 0.9, BLOCK_SHAPES[fmt]), fmt)
            many, one = ours(matrix, threads, n), ours(matrix, 1, n)
            steady = compare_latency(many, one, feeds, warmup=3, repeats=repeats, burst=8)
            single = compare_latency(many, one, feeds, warmup=3, repeats=2 * repeats)
            cells.append(f"{cell(steady)} / {cell(single)}")
        print(f"| {m}x{k}x{n} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
