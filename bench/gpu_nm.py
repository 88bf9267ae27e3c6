"""2:4 semi-structured sparsity on a CUDA GPU: layer and whole-model latency against dense.

Run on a GPU machine from the repository root: ``python bench/gpu_nm.py [--quick]``.

Layers: each (M, K, N) of ``bench/kernels.py`` (a 1x1 convolution or linear layer with M
outputs, K inputs and N pixels of one image) at batch 1 and 32, and two LLM-sized products, as
``F.linear(x[N, K], W[M, K])`` in float16. A CUDA graph holds ``--calls`` back-to-back calls; it
is replayed and timed with CUDA events, and the time divided by the calls. That is the layer's GPU
time as it runs inside a captured model: one replay costs ~17 us of launch whatever it holds, and
in the first run (bench/results/gpu_nm_h100.md, one call per replay) hid every layer below that.
Two 2:4 paths: ``F.linear`` on torch's ``SparseSemiStructuredTensor`` (what models use; it pads
and transposes) and ``torch._cslt_sparse_mm`` on the compressed weight (the bare cuSPARSELt call).

Models: torchvision ResNet-50, MobileNetV2 and ViT-B/16 with random weights (nothing is
downloaded); every layer that can take a 2:4 weight (``workers.runtime.semi_structured``) is
pruned to 2:4 by magnitude, and the same dense-with-zeros module is timed against its cuSPARSELt
version through the ``torch-cuda`` latency backend (float16, channels-last, CUDA graphs,
inputs resident), interleaved in one process, outputs compared.

Structured: ResNet-50 with its bottleneck widths halved (rounded to 8, and odd), as
``bench/sparse_models.py`` builds them for onnxruntime, against the dense ResNet-50 on the same
backend: the GPU counterpart of that script's latency-ratio-against-MAC-ratio table.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from functools import partial
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from workers.runtime.cuda_runner import CudaModuleRunner, capture_graph  # noqa: E402
from workers.runtime.latency import compare_latency, get_backend  # noqa: E402
from workers.runtime.nm_sparsity import nm_mask  # noqa: E402
from workers.runtime.semi_structured import apply_two_four, plan_semi_structured  # noqa: E402

# bench/kernels.py's SHAPES (the CPU kernel benchmark), then two LLM projections.
CPU_SHAPES = [(128, 128, 3136), (256, 256, 784), (512, 512, 196), (1024, 1024, 49), (768, 768, 512)]
LLM_SHAPES = [(4096, 4096, 4096), (11008, 4096, 2048)]
MODELS = ["ResNet-50", "MobileNetV2", "ViT-B/16"]
DENSE_LABELS = {  # the start of each reason in workers.runtime.semi_structured, shortened
    "Conv2d": "convolutions not 1x1 stride 1",
    "weight ": "with a dim not a multiple of 16",
    "MultiheadAttention": "attention out_proj",
    "torch refused": "refused by torch",
}


def time_graph(fn, calls: int, reps: int) -> tuple[float, float, float]:
    """Median, p10 and p90 microseconds per call of ``fn``, from a graph of ``calls`` calls."""
    graph, _ = capture_graph(fn, calls)
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    times.sort()
    return statistics.median(times), times[len(times) // 10], times[(9 * len(times)) // 10]


def layer_table(shapes: list[tuple[int, int, int, int]], calls: int, reps: int) -> None:
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    SparseSemiStructuredTensor._FORCE_CUTLASS = False  # CUTLASS 2:4 is sm80 only
    print(f"\n### Layers (float16, graph of {calls} calls, median of {reps} replays)\n")
    print(
        "| M x K x N | batch | dense us (p10-p90) | 2:4 F.linear us | speed-up | 2:4 cuSPARSELt mm us | speed-up | max rel err |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for m, k, n, batch in shapes:
        gen = torch.Generator(device="cuda").manual_seed(0)
        weight = torch.randn(m, k, device="cuda", dtype=torch.float16, generator=gen)
        weight = weight * torch.from_numpy(nm_mask(weight.float().cpu().numpy())).cuda()
        x = torch.randn(n * batch, k, device="cuda", dtype=torch.float16, generator=gen)
        sparse_weight = to_sparse_semi_structured(weight)
        reference = F.linear(x, weight).float()
        got = F.linear(x, sparse_weight).float()
        err = ((got - reference).abs().max() / reference.abs().max()).item()
        dense = time_graph(partial(F.linear, x, weight), calls, reps)
        linear = time_graph(partial(F.linear, x, sparse_weight), calls, reps)
        try:
            compressed, xt = torch._cslt_compress(weight), x.t().contiguous()
            cslt = time_graph(partial(torch._cslt_sparse_mm, compressed, xt), calls, reps)
            cslt_cells = f"{cslt[0]:.2f} | {dense[0] / cslt[0]:.2f}x"
        except RuntimeError as error:  # cuSPARSELt refuses some dense shapes; say which
            cslt_cells = f"refused ({str(error).splitlines()[0][:60]}) | -"
        print(
            f"| {m}x{k}x{n} | {batch} | {dense[0]:.2f} ({dense[1]:.2f}-{dense[2]:.2f}) "
            f"| {linear[0]:.2f} | {dense[0] / linear[0]:.2f}x | {cslt_cells} | {err:.1e} |",
            flush=True,
        )


def build_model(name: str) -> torch.nn.Module:
    import torchvision

    builders = {
        "ResNet-50": torchvision.models.resnet50,
        "MobileNetV2": torchvision.models.mobilenet_v2,
        "ViT-B/16": torchvision.models.vit_b_16,
    }
    torch.manual_seed(0)
    module = builders[name](weights=None).eval()
    with torch.no_grad():  # torchvision's ViT head starts at zero: give every output a signal
        for parameter in module.parameters():
            if parameter.dim() >= 2 and not parameter.abs().sum():
                parameter.normal_(0, 0.02)
    return module


def total_macs(module: torch.nn.Module) -> int:
    """MACs of one 224x224 image: torch's FLOP count of a training-mode forward of a copy, halved.

    In eval mode MultiheadAttention takes a fused path the counter does not see, and its
    projections and attention products would drop out of the total.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        copy.deepcopy(module).train()(torch.randn(1, 3, 224, 224))
    return counter.get_total_flops() // 2


def mac_share(module: torch.nn.Module, names: tuple[str, ...]) -> float:
    """Fraction of the model's MACs (one 224x224 image) in the named layers."""
    macs: dict[str, int] = {}
    hooks = []
    for name in names:

        def hook(layer, _inputs, output, name=name):
            macs[name] = macs.get(name, 0) + output.numel() * layer.weight[0].numel()

        hooks.append(module.get_submodule(name).register_forward_hook(hook))
    with torch.no_grad():
        module(torch.randn(1, 3, 224, 224))
    for handle in hooks:
        handle.remove()
    return sum(macs.values()) / total_macs(module)


def model_table(names: list[str], batches: list[int], repeats: int) -> None:
    print(f"\n### Models (float16, channels-last, CUDA graphs; {repeats} interleaved rounds)\n")
    print(
        "| model | batch | 2:4 layers | share of MACs | dense ms (p10-p90) | 2:4 ms (p10-p90) | speed-up (p10-p90) | max rel err |"
    )
    print("|---|---|---|---|---|---|---|---|")
    options = {"dtype": "float16", "channels_last": True}
    for name in names:
        module = build_model(name)
        apply_two_four(module)
        plan = plan_semi_structured(module)
        share = mac_share(module, plan.converted)
        dense = get_backend("torch-cuda", **options).load(module, 1)
        sparse_backend = get_backend("torch-cuda", semi_structured=True, **options)
        sparse = cast(CudaModuleRunner, sparse_backend.load(module, 1))
        assert sparse.plan is not None
        layers = f"{len(sparse.plan.converted)} of {len(plan.converted) + len(plan.dense)}"
        for batch in batches:
            x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224))
            feeds = {"x": x.astype(np.float32)}
            result = compare_latency(
                sparse, dense, feeds, warmup=5, repeats=repeats, rtol=5e-2, burst=3
            )
            print(
                f"| {name} | {batch} | {layers} | {share:.0%} "
                f"| {result.reference.median_ms:.3f} ({result.reference.p10_ms:.3f}-{result.reference.p90_ms:.3f}) "
                f"| {result.candidate.median_ms:.3f} ({result.candidate.p10_ms:.3f}-{result.candidate.p90_ms:.3f}) "
                f"| {result.speedup:.2f}x ({result.speedup_p10:.2f}-{result.speedup_p90:.2f}) "
                f"| {result.max_rel_error:.1e} |",
                flush=True,
            )
        counts: dict[str, int] = {}
        for reason in sparse.plan.dense.values():
            label = next((v for k, v in DENSE_LABELS.items() if reason.startswith(k)), reason)
            counts[label] = counts.get(label, 0) + 1
        summary = ", ".join(f"{count} {label}" for label, count in sorted(counts.items()))
        print(f"|  | dense: {summary} | | | | | | |", flush=True)


STRUCTURED = {  # bottleneck inner widths halved, as bench/sparse_models.py builds them
    "ResNet-50 inner x0.5 (multiples of 8)": 32,
    "ResNet-50 inner x0.48 (odd)": 31,
}


def structured_table(batches: list[int], repeats: int) -> None:
    """Channel-pruned ResNet-50 against the dense one: latency ratio against MAC ratio."""
    import torchvision

    print(
        f"\n### Structured pruning, ResNet-50 (float16, channels-last, CUDA graphs; {repeats} rounds)\n"
    )
    print(
        "Efficiency = latency reduction / MAC reduction = (1 - latency ratio) / (1 - MAC ratio).\n"
    )
    print("| variant | batch | MAC ratio | dense ms | pruned ms | latency ratio | efficiency |")
    print("|---|---|---|---|---|---|---|")
    backend = get_backend("torch-cuda", dtype="float16", channels_last=True)
    base = build_model("ResNet-50")
    base_runner = backend.load(base, 1)
    for label, width in STRUCTURED.items():
        torch.manual_seed(0)
        pruned = torchvision.models.ResNet(
            torchvision.models.resnet.Bottleneck, [3, 4, 6, 3], width_per_group=width
        ).eval()
        mac_ratio = total_macs(pruned) / total_macs(base)
        pruned_runner = backend.load(pruned, 1)
        for batch in batches:
            x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224))
            result = compare_latency(
                pruned_runner, base_runner, {"x": x.astype(np.float32)},
                warmup=5, repeats=repeats, check_outputs=False, burst=3,
            )  # fmt: skip
            latency_ratio = 1.0 / result.speedup
            print(
                f"| {label} | {batch} | {mac_ratio:.3f} | {result.reference.median_ms:.3f} "
                f"| {result.candidate.median_ms:.3f} | {latency_ratio:.3f} "
                f"| {(1 - latency_ratio) / (1 - mac_ratio):.2f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="two layers, one model, batch 1")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=30, help="model rounds")
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-structured", action="store_true")
    args = parser.parse_args()
    print(
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, cuSPARSELt {torch.backends.cusparselt.version()}"
    )
    shapes = [(m, k, n, b) for m, k, n in CPU_SHAPES for b in (1, 32)]
    shapes += [(m, k, n, 1) for m, k, n in LLM_SHAPES]
    if not args.skip_layers:
        layer_table(shapes[:2] if args.quick else shapes, args.calls, args.reps)
    if not args.skip_models:
        models, batches = (MODELS[:1], [1]) if args.quick else (MODELS, [1, 32, 128])
        model_table(models, batches, args.repeats)
    if not args.skip_structured:
        structured_table([1] if args.quick else [1, 32, 128], args.repeats)


if __name__ == "__main__":
    main()
