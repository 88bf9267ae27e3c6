"""Whole-model latency: sparse MobileNetV2 / ResNet-50 in the kernel executor vs onnxruntime, and
structured-pruned ResNet-50 latency ratio vs MAC ratio in onnxruntime.

``python bench/sparse_models.py [--quick] [--repeats N] [--threads 1 2]`` prints markdown tables.
Models are torchvision architectures with random weights (weights=None; nothing is downloaded),
exported with ``torch.onnx.export(dynamo=False)``. Sparse models zero 90% of every ungrouped Conv
and Gemm weight (the 3-channel stem stays dense, as in "Fast Sparse ConvNets") by magnitude,
unstructured or in 4x1 blocks; the reference is the same dense-with-zeros file in plain
onnxruntime (which does not exploit zeros), timed alternately in one process, outputs compared.
Idle onnxruntime threads do not spin in either runner (``session.intra_op.allow_spinning=0``):
a spinning pool keeps a core busy after its run and would slow whichever runner comes next.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # see bench/kernels.py

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from workers.runtime.executor import SparseExecutor  # noqa: E402
from workers.runtime.latency import compare_latency, get_backend  # noqa: E402
from workers.runtime.sparse_formats import BLOCK_SHAPES, sparsify  # noqa: E402


def _torchvision_model(name: str):
    import torchvision

    resnet = torchvision.models.ResNet
    bottleneck = torchvision.models.resnet.Bottleneck
    builders = {
        "MobileNetV2": lambda: torchvision.models.mobilenet_v2(weights=None),
        "ResNet-50": lambda: torchvision.models.resnet50(weights=None),
        # Structured pruning of every bottleneck's inner width, built directly: x0.5 rounded to
        # multiples of 8 (32/64/128/256), and x0.48 with odd counts (31/62/124/248).
        "ResNet-50 inner x0.5 (multiples of 8)": lambda: resnet(
            bottleneck, [3, 4, 6, 3], width_per_group=32
        ),
        "ResNet-50 inner x0.48 (odd)": lambda: resnet(bottleneck, [3, 4, 6, 3], width_per_group=31),
    }
    return builders[name]()


def export(name: str, image_size: int = 224) -> onnx.ModelProto:
    """ONNX (legacy exporter) of a torchvision model with random weights, input "x"."""
    import torch

    torch.manual_seed(0)
    buffer = io.BytesIO()
    x = torch.randn(1, 3, image_size, image_size)
    module = _torchvision_model(name).eval()
    torch.onnx.export(module, (x,), buffer, dynamo=False, input_names=["x"])
    return onnx.load_from_string(buffer.getvalue())


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name) + ".onnx"


def save_skeleton(name: str, directory: str) -> None:
    """Save the graph with its large weights in a side file, which need not travel."""
    model = export(name)
    path = os.path.join(directory, _file_name(name))
    onnx.save(model, path, save_as_external_data=True, location=_file_name(name) + ".data")


def load_model(name: str, models_dir: str | None) -> onnx.ModelProto:
    """Export from torchvision, or load a skeleton and fill its external weights at random.

    Random weights are scaled by 1/sqrt(fan-in) so activations stay finite; the comparisons in
    this script only need the same weights on both sides.
    """
    if models_dir is None:
        return export(name)
    model = onnx.load(os.path.join(models_dir, _file_name(name)), load_external_data=False)
    rng = np.random.default_rng(0)
    for index, init in enumerate(model.graph.initializer):
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        dims = tuple(init.dims)
        fan_in = int(np.prod(dims[1:])) if len(dims) > 1 else 100
        values = (rng.standard_normal(dims) / np.sqrt(fan_in)).astype(np.float32)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(values, init.name))
    return model


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


def sparse_table(threads_list: list[int], repeats: int, quick: bool, models_dir) -> None:
    names = ["MobileNetV2"] if quick else ["MobileNetV2", "ResNet-50"]
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    print("\n### Sparse models (90% of weight-layer weights zero), batch 1, 224x224\n")
    print("| model | pattern | threads | onnxruntime dense ms (p10-p90) | sparse executor ms "
          "(p10-p90) | speed-up | max rel err | kernel layers / ORT segments |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        dense = load_model(name, models_dir)
        for pattern in ("csr", "4x1"):
            model = sparsify_model(dense, 0.9, pattern)
            for threads in threads_list:
                executor = SparseExecutor(model, threads=threads, fmt=pattern)
                reference = get_backend("onnxruntime", spinning=False).load(model, threads)
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


STRUCTURED = ["ResNet-50 inner x0.5 (multiples of 8)", "ResNet-50 inner x0.48 (odd)"]


def structured_table(threads_list: list[int], repeats: int, models_dir) -> None:
    """ResNet-50 with bottleneck widths halved: rounded to 8 (width_per_group=32) and odd (31)."""
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    base = load_model("ResNet-50", models_dir)
    base_macs = count_macs(base)
    print("\n### Structured pruning, ResNet-50 in onnxruntime (batch 1, 224x224)\n")
    print(f"Dense ResNet-50: {base_macs / 1e9:.2f} GMAC. Efficiency = latency reduction / MAC "
          "reduction = (1 - latency ratio) / (1 - MAC ratio); target >= 0.9.\n")  # fmt: skip
    print("| variant | threads | MAC ratio | dense ms | pruned ms | latency ratio | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for label in STRUCTURED:
        pruned = load_model(label, models_dir)
        mac_ratio = count_macs(pruned) / base_macs
        for threads in threads_list:
            backend = get_backend("onnxruntime", spinning=False)
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
    parser.add_argument("--models-dir", help="load saved skeletons (no torchvision needed)")
    parser.add_argument("--save-skeletons", metavar="DIR", help="export the models and exit")
    args = parser.parse_args()
    if args.save_skeletons:
        os.makedirs(args.save_skeletons, exist_ok=True)
        for name in ["MobileNetV2", "ResNet-50", *STRUCTURED]:
            save_skeleton(name, args.save_skeletons)
        return
    repeats = args.repeats or (8 if args.quick else 20)
    import onnxruntime

    print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"cores {os.cpu_count()}, affinity {len(os.sched_getaffinity(0))}, "
          f"load {os.getloadavg()}")  # fmt: skip
    sparse_table(args.threads, repeats, args.quick, args.models_dir)
    if not args.skip_structured:
        structured_table(
            args.threads, max(repeats // 2, 5) if args.quick else repeats, args.models_dir
        )


if __name__ == "__main__":
    main()
