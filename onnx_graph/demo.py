"""The bundled demo: prune a randomly initialised ResNet-18 and prove the result exact and faster."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from onnx_graph.analysis import analyze
from onnx_graph.cost import count_cost
from onnx_graph.lowering import lower, save
from onnx_graph.report import format_prune_report
from onnx_graph.surgery import prune, zero_out
from onnx_graph.testing import randomize_module, run_onnx


def run_demo(ratio: float = 0.5, output: Path | None = None) -> int:
    """Lower, analyse, prune (L1, channels rounded to 8), check exactness, time both models."""
    import torch
    import torchvision

    from spa.allocation import plan_uniform

    torch.manual_seed(0)
    module = randomize_module(torchvision.models.resnet18(weights=None), seed=0)
    example = torch.randn(1, 3, 224, 224)
    print("lowering resnet18 to ONNX (torch.onnx.export, dynamic batch) ...", flush=True)
    model = lower(module, (example,))
    start = time.perf_counter()
    groups = analyze(model)
    plan = plan_uniform(model, groups, ratio, criterion="l1", round_to=8)
    pruned = prune(model, plan)
    elapsed = time.perf_counter() - start
    print(format_prune_report(count_cost(model), count_cost(pruned), groups, plan, []))
    print(f"analysis + surgery: {elapsed:.2f}s")

    inputs = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    pruned_out = run_onnx(pruned, inputs)[0]
    zeroed_out = run_onnx(zero_out(model, plan), inputs)[0]
    difference = float(np.abs(pruned_out - zeroed_out).max())
    print(
        f"exactness oracle: max |pruned - zeroed| = {difference:.2e} "
        f"(output scale {np.abs(zeroed_out).max():.2e})"
    )
    dense_ms, pruned_ms = _median_ms(model, inputs), _median_ms(pruned, inputs)
    print(
        f"onnxruntime latency (1 thread, batch 2): dense {dense_ms:.1f} ms, pruned {pruned_ms:.1f} ms "
        f"({dense_ms / pruned_ms:.2f}x)"
    )
    if output is None:
        output = Path(tempfile.gettempdir()) / "sparsearch_demo_resnet18_pruned.onnx"
    save(pruned, output)
    print(f"wrote {output}")
    return 0


def _median_ms(model, inputs: np.ndarray, repeats: int = 10) -> float:  # type: ignore[no-untyped-def]
    import onnx_ir as ir
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {session.get_inputs()[0].name: inputs}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
