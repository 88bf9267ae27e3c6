"""Whole-model latency: sparse MobileNetV2 / ResNet-50 in the kernel executor vs onnxruntime, and
structured-pruned ResNet-50 latency ratio vs MAC ratio in onnxruntime.

``python bench/sparse_models.py [--quick] [--repeats N] [--threads 1 2]`` prints markdown tables.
Models are torchvision architectures with random weights (weights=None; nothing is downloaded),
exported with ``torch.onnx.export(dynamo=False)``. Sparse models zero 90% of every ungrouped Conv
and Gemm weight (the 3-channel stem stays dense, as in "Fast Sparse ConvNets") by magnitude,
unstructured or in 4x1 blocks; the reference is the same dense-with-zeros file in plain
onnxruntime (which does not exploit zeros), timed alternately in one process, outputs compared.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("GOMP_SPINCOUNT", "30000")  # see bench/kernels.py

import onnx  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from workers.runtime.executor import SparseExecutor  # noqa: E402
from workers.runtime.latency import compare_latency, get_backend  # noqa: E402
from workers.runtime.sparse_formats import BLOCK_SHAPES, sparsify  # noqa: E402


def export(module: torch.nn.Module, image_size: int = 224) -> onnx.ModelProto:
    """ONNX of an eval-mode module on a (1, 3, size, size) input named "x"."""
    torch.manual_seed(0)
    buffer = io.BytesIO()
    x = torch.randn(1, 3, image_size, image_size)
    torch.onnx.export(module.eval(), (x,), buffer, dynamo=False, input_names=["x"])
    return onnx.load_from_string(buffer.getvalue())


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul nodes, from inferred static shapes."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    shapes.update({init.name: list(init.dims) for init in model.graph.initializer})
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            weight, out = shapes[node.input[1]], shapes[node.output[0]]
            total += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            total += int(np.prod(out)) * a[-1]
    return total


def sparsify_model(model: onnx.ModelProto, sparsity: float, fmt: str) -> onnx.ModelProto:
    """A copy with every ungrouped Conv (except 3-channel stems) and Gemm weight pruned."""
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    initializers = {init.name: init for init in pruned.graph.initializer}
    for node in pruned.graph.node:
        groups = [a.i for a in node.attribute if a.name == "group"]
        if node.op_type not in ("Conv", "Gemm") or (groups and groups[0] != 1):
            continue
        if node.input[1] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if node.op_type == "Conv" and weight.shape[1] == 3:
            continue
        matrix = sparsify(weight.reshape(weight.shape[0], -1), sparsity, BLOCK_SHAPES[fmt])
        initializers[node.input[1]].CopyFrom(
            numpy_helper.from_array(matrix.reshape(weight.shape), node.input[1])
        )
    return pruned


def sparse_table(threads_list: list[int], repeats: int, quick: bool) -> None:
    models = {"MobileNetV2": torchvision.models.mobilenet_v2(weights=None)}
    if not quick:
        models["ResNet-50"] = torchvision.models.resnet50(weights=None)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    print("\n### Sparse models (90% of weight-layer weights zero), batch 1, 224x224\n")
    print("| model | pattern | threads | onnxruntime dense ms (p10-p90) | sparse executor ms "
          "(p10-p90) | speed-up | max rel err | kernel layers / ORT segments |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, module in models.items():
        dense = export(module)
        for pattern in ("csr", "4x1"):
            model = sparsify_model(dense, 0.9, pattern)
            for threads in threads_list:
                executor = SparseExecutor(model, threads=threads, fmt=pattern)
                reference = get_backend("onnxruntime").load(model, threads)
                result = compare_latency(executor.run, reference, feeds, warmup=3, repeats=repeats)
                ref, cand = result.reference, result.candidate
                print(
                    f"| {name} | 90% {pattern} | {threads} | {ref.median_ms:.2f} "
                    f"({ref.p10_ms:.2f}-{ref.p90_ms:.2f}) | {cand.median_ms:.2f} "
                    f"({cand.p10_ms:.2f}-{cand.p90_ms:.2f}) | {'~' if result.noisy else ''}"
                    f"{result.speedup:.2f}x | {result.max_rel_error:.1e} | "
                    f"{len(executor.kernel_layers)} / {executor.segment_count} |",
                    flush=True,
                )


def structured_table(threads_list: list[int], repeats: int) -> None:
    """ResNet-50 with bottleneck widths halved: rounded to 8 (width_per_group=32) and odd (31)."""
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    block = torchvision.models.resnet.Bottleneck
    base = export(torchvision.models.resnet50(weights=None))
    variants = {
        "widths x0.5, multiples of 8 (32/64/128/256)": torchvision.models.ResNet(
            block, [3, 4, 6, 3], width_per_group=32
        ),
        "widths x0.48, odd (31/62/124/248)": torchvision.models.ResNet(
            block, [3, 4, 6, 3], width_per_group=31
        ),
    }
    base_macs = count_macs(base)
    print("\n### Structured pruning, ResNet-50 in onnxruntime (batch 1, 224x224)\n")
    print(f"Dense ResNet-50: {base_macs / 1e9:.2f} GMAC. Efficiency = latency reduction / MAC "
          "reduction = (1 - latency ratio) / (1 - MAC ratio); target >= 0.9.\n")  # fmt: skip
    print("| variant | threads | MAC ratio | dense ms | pruned ms | latency ratio | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for label, module in variants.items():
        pruned = export(module)
        mac_ratio = count_macs(pruned) / base_macs
        for threads in threads_list:
            backend = get_backend("onnxruntime")
            result = compare_latency(
                backend.load(pruned, threads), backend.load(base, threads), feeds,
                warmup=3, repeats=repeats, check_outputs=False,
            )  # fmt: skip
            latency_ratio = 1.0 / result.speedup
            efficiency = (1 - latency_ratio) / (1 - mac_ratio)
            print(
                f"| {label} | {threads} | {mac_ratio:.3f} | {result.reference.median_ms:.1f} | "
                f"{result.candidate.median_ms:.1f} | {'~' if result.noisy else ''}"
                f"{latency_ratio:.3f} | {efficiency:.2f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MobileNetV2 only, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-structured", action="store_true")
    args = parser.parse_args()
    repeats = args.repeats or (8 if args.quick else 20)
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, load {os.getloadavg()}")
    sparse_table(args.threads, repeats, args.quick)
    if not args.skip_structured:
        structured_table(args.threads, max(repeats // 2, 5) if args.quick else repeats)


if __name__ == "__main__":
    main()
