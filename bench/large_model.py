"""Benchmark: analyse and prune a synthetic ONNX model over 2 GB (external data) in under 2 GB RSS.

The model is an MLP of ``layers`` MatMul+Add+Relu blocks of width ``width`` (default 9 x 8192^2
float32 weights = 2.4 GB) written straight to an external-data file. A child process then loads it
lazily, analyses it, scores groups by L1 norm (unmapping each weight after use), removes half of
every hidden group, validates and saves the result with external data, and reports its peak RSS.
The pruned model is checked against numpy on the sliced original weights.

Usage::

    python bench/large_model.py [--width 8192] [--layers 9] [--folder /tmp/large_model]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCH = 4


def build(folder: Path, width: int, layers: int) -> Path:
    """Write the MLP one weight at a time (never more than one layer in memory)."""
    import onnx_ir as ir

    folder.mkdir(parents=True, exist_ok=True)
    path, data_name = folder / "large.onnx", "large.onnx.data"
    rng = np.random.default_rng(0)
    x = ir.Value(name="x", shape=ir.Shape(["batch", width]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], name="large_mlp", opset_imports={"": 20})
    offset, current = 0, x
    with open(folder / data_name, "wb") as data:
        for layer in range(layers):
            for name, shape in ((f"w{layer}", (width, width)), (f"b{layer}", (width,))):
                array = (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(width)).astype(
                    np.float32
                )
                array.tofile(data)
                tensor = ir.ExternalTensor(
                    data_name,
                    offset,
                    array.nbytes,
                    ir.DataType.FLOAT,
                    shape=ir.Shape(shape),
                    name=name,
                    base_dir=folder,
                )
                offset += array.nbytes
                value = ir.Value(
                    name=name,
                    shape=ir.Shape(shape),
                    type=ir.TensorType(ir.DataType.FLOAT),
                    const_value=tensor,
                )
                graph.register_initializer(value)
            matmul = ir.node("MatMul", [current, graph.initializers[f"w{layer}"]])
            add = ir.node("Add", [matmul.outputs[0], graph.initializers[f"b{layer}"]])
            graph.extend([matmul, add])
            current = add.outputs[0]
            if layer < layers - 1:
                relu = ir.node("Relu", [current])
                graph.append(relu)
                current = relu.outputs[0]
            del array
    current.name = "y"
    graph.outputs.append(current)
    ir.save(ir.Model(graph, ir_version=10), path)  # tensors already point at the data file
    return path


def prune_large(path: Path, output: Path) -> dict[str, Any]:
    """Child-process body: lazy load, analyse, plan, prune, validate, save; returns timings."""
    import onnx_ir as ir

    import onnx_graph as og
    from spa.allocation import plan_uniform
    from spa.importance import ImportanceCriterion, get_criterion

    class Unmapping(ImportanceCriterion):
        """L1 scores that unmap each weight once it is scored (RSS stays one weight deep)."""

        def score(self, model: ir.Model, group: og.PruningGroup) -> np.ndarray:
            scores = get_criterion("l1").score(model, group)
            for member in group.parameters:
                tensor = model.graph.initializers[member.value_name].const_value
                if isinstance(tensor, ir.ExternalTensor):
                    tensor.release()
            return scores

    timings: dict[str, float] = {}
    start = time.perf_counter()
    model = og.load(path)
    timings["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    groups = og.analyze(model)
    timings["analysis_s"] = time.perf_counter() - start
    start = time.perf_counter()
    plan = plan_uniform(model, groups, 0.5, criterion=Unmapping())
    timings["plan_s"] = time.perf_counter() - start
    start = time.perf_counter()
    pruned = og.prune(model, plan, validate=False)
    timings["surgery_s"] = time.perf_counter() - start
    start = time.perf_counter()
    og.check_model(pruned)
    timings["validate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    og.save(pruned, output, external_data=True)
    timings["save_s"] = time.perf_counter() - start
    kept = {name: np.asarray(axes).tolist() for name, axes in _kept_channels(groups, plan).items()}
    return {
        "timings": timings,
        "kept": kept,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _kept_channels(groups: Any, plan: Any) -> dict[str, np.ndarray]:
    """Kept output channels of each hidden layer (keyed by its bias name)."""
    kept = groups.kept_positions(plan.removed_mask())
    return {name: positions for (name, axis), positions in kept.items() if name.startswith("b")}


def verify(path: Path, output: Path, kept: dict[str, list[int]], layers: int) -> float:
    """Max |pruned ONNX - numpy on sliced original weights| on a random batch."""
    import onnx_ir as ir

    original = ir.load(path)
    weights = {name: value.const_value for name, value in original.graph.initializers.items()}
    width = int(weights["w0"].shape[0])  # type: ignore[union-attr, arg-type]
    x = np.random.default_rng(1).standard_normal((BATCH, width)).astype(np.float32)
    expected, previous = x, None
    for layer in range(layers):
        weight = weights[f"w{layer}"].numpy()  # type: ignore[union-attr]
        bias = weights[f"b{layer}"].numpy()  # type: ignore[union-attr]
        rows = np.asarray(previous) if previous is not None else slice(None)
        columns = np.asarray(kept[f"b{layer}"]) if f"b{layer}" in kept else slice(None)
        expected = expected @ weight[rows][:, columns] + bias[columns]
        if layer < layers - 1:
            expected = np.maximum(expected, 0.0)
        previous = kept.get(f"b{layer}")
    import onnxruntime as ort

    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"x": x})[0]
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--folder", default="/tmp/large_model")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder)
    path, output = folder / "large.onnx", folder / "pruned.onnx"
    if args.child:
        print(json.dumps(prune_large(path, output)))
        return
    start = time.perf_counter()
    build(folder, args.width, args.layers)
    size_gb = sum(f.stat().st_size for f in folder.glob("large.onnx*")) / 1e9
    print(f"built {size_gb:.2f} GB in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    completed = subprocess.run(
        [sys.executable, __file__, "--child", "--folder", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["model_gb"] = size_gb
    result["pruned_gb"] = sum(f.stat().st_size for f in folder.glob("pruned.onnx*")) / 1e9
    result["external_data"] = (folder / "pruned.onnx.data").exists()
    result["relative_error"] = verify(path, output, result.pop("kept"), args.layers)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
