"""2:4 semi-structured sparsity on a CUDA GPU: torch latency vs dense for the CPU benchmark shapes.

Self-contained (torch only) so it can run on a lent GPU machine:
``python bench/gpu_nm.py [--quick]``. Each (M, K, N) is a 1x1 convolution / linear layer with
M output channels, K input channels and N pixels or tokens, run as ``F.linear(x[N, K], W[M, K])``.
Times are CUDA-event medians after warm-up, with p10/p90; the speed-up limit of 2:4 is 2x. The
CUTLASS backend needs compute capability 8.x, so on Hopper only cuSPARSELt is measured.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch
import torch.nn.functional as F

SHAPES = [
    (256, 256, 3136),
    (512, 512, 784),
    (1024, 1024, 196),
    (1280, 320, 49),
    (2048, 2048, 512),
    (4096, 4096, 4096),
    (11008, 4096, 2048),
]


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the two largest-magnitude weights of every 4 consecutive input channels."""
    groups = weight.abs().reshape(weight.shape[0], -1, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape_as(weight)


def time_cuda(fn, warmup: int, reps: int) -> tuple[float, float, float]:
    """Median, p10 and p90 in microseconds, one CUDA-event pair per call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    times.sort()
    return statistics.median(times), times[len(times) // 10], times[(9 * len(times)) // 10]


def graph_replay(fn):
    """Capture ``fn`` in a CUDA graph so replay times GPU work without Python/dispatch overhead."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    print(
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    )
    reps = 50 if args.quick else args.reps
    print(
        "\nEager: F.linear per call (includes dispatch). Graph: the same call captured in a CUDA "
        "graph and replayed (GPU time only). cslt: torch._cslt_sparse_mm on a compressed weight."
    )
    print(
        "\n| M x K x N | dtype | variant | dense us (p10-p90) | 2:4 us (p10-p90) | speed-up | max rel err |"
    )
    print("|---|---|---|---|---|---|---|")
    for m, k, n in SHAPES[:4] if args.quick else SHAPES:
        for dtype in (torch.float16, torch.bfloat16):
            gen = torch.Generator(device="cuda").manual_seed(0)
            weight = torch.randn(m, k, device="cuda", dtype=dtype, generator=gen)
            weight = weight * two_four_mask(weight)
            x = torch.randn(n, k, device="cuda", dtype=dtype, generator=gen)
            reference = F.linear(x, weight).float()
            SparseSemiStructuredTensor._FORCE_CUTLASS = False
            sparse_weight = to_sparse_semi_structured(weight)
            compressed = torch._cslt_compress(weight)
            xt = x.t().contiguous()
            eager_pair = (partial(F.linear, x, weight), partial(F.linear, x, sparse_weight))
            cslt_pair = (
                partial(torch.mm, weight, xt),
                partial(torch._cslt_sparse_mm, compressed, xt),
            )
            variants = [
                ("eager", eager_pair, False),
                ("graph", eager_pair, True),
                ("cslt graph", cslt_pair, True),
            ]
            out = F.linear(x, sparse_weight).float()
            err = ((out - reference).abs().max() / reference.abs().max()).item()
            for name, (dense_fn, sparse_fn), captured in variants:
                try:
                    if captured:
                        dense_fn, sparse_fn = graph_replay(dense_fn), graph_replay(sparse_fn)
                    dense = time_cuda(dense_fn, 20, reps)
                    sparse = time_cuda(sparse_fn, 20, reps)
                except Exception as error:  # report unsupported shapes and go on
                    print(
                        f"| {m}x{k}x{n} | {str(dtype)[6:]} | {name} | failed: {str(error)[:80]} | | | |"
                    )
                    continue
                print(
                    f"| {m}x{k}x{n} | {str(dtype)[6:]} | {name} | {dense[0]:.1f} ({dense[1]:.1f}-{dense[2]:.1f}) "
                    f"| {sparse[0]:.1f} ({sparse[1]:.1f}-{sparse[2]:.1f}) | {dense[0] / sparse[0]:.2f}x | {err:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
