"""Benchmark: prune every torchvision transformer-era model with sparsearch and with Torch-Pruning.

For each model (``bench/zoo_models.py``): random weights, export to ONNX (dynamo, batch 1), then
sparsearch analyses it (whole heads, MLP hidden channels, the embedding across the residual stream
with LayerNorm groups allowed), removes 50% of every group by L1 norm, validates the graph and checks
exactness against the masked-LayerNorm reference. Torch-Pruning runs its plain script on the same
module: ``MetaPruner(MagnitudeImportance(p=1), pruning_ratio=0.5, ignored_layers=[classifier])``.
Each model runs in its own process (memory, time limit). Prints a markdown table.

Usage::

    python bench/zoo_transformers.py [--models vit_b_16 swin_t ...] [--jsonl results.jsonl]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.zoo_models import ZooModel, transformer_models  # noqa: E402

RATIO = 0.5
TOLERANCE = 1e-4


def run_sparsearch(zoo_model: ZooModel, module: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    import onnx_graph as og
    from onnx_graph.inexact_reference import masked_norm_difference
    from spa.allocation import plan_uniform

    start = time.perf_counter()
    model = og.lower(module, (torch.randn(zoo_model.input_shape),), dynamic_batch=False)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    groups = og.analyze(model, attention="heads", allow_inexact=True)
    analysis_s = time.perf_counter() - start
    plan = plan_uniform(model, groups, RATIO)
    start = time.perf_counter()
    pruned = og.prune(model, plan, validate=False)
    surgery_s = time.perf_counter() - start
    og.check_model(pruned)  # strict shape inference + full checker (timed apart)
    images = np.random.default_rng(0).standard_normal(zoo_model.input_shape).astype(np.float32)
    error, scale = masked_norm_difference(model, plan, images)
    before, after = og.count_cost(model), og.count_cost(pruned)
    with_parameters = [g for g in groups if g.parameters and g.num_channels > 1]
    return {
        "ok": True,
        "exact": error <= TOLERANCE * max(1.0, scale),
        "max_error": error,
        "export_s": export_s,
        "analysis_s": analysis_s,
        "surgery_s": surgery_s,
        "groups": len(with_parameters),
        "pruned_groups": len(plan.removed),
        "params": (before.params, after.params),
        "macs": (before.macs, after.macs),
    }


def run_torch_pruning(zoo_model: ZooModel, module: Any) -> dict[str, Any]:
    import torch
    import torch_pruning as tp

    example = torch.randn(zoo_model.input_shape)
    classifier = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
    macs_before, params_before = tp.utils.count_ops_and_params(module, example)
    start = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(
            module,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=RATIO,
            ignored_layers=[classifier],
        )
        pruner.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            output = module(example)
        if tuple(output.shape) != (1, classifier.out_features):
            raise RuntimeError(f"output shape {tuple(output.shape)}")
        macs_after, params_after = tp.utils.count_ops_and_params(module, example)
    except Exception as error:  # the benchmark records any failure of the other tool
        return {
            "ok": False,
            "error": f"{type(error).__name__}: {str(error).splitlines()[0][:80]}",
            "seconds": time.perf_counter() - start,
        }
    return {
        "ok": True,
        "seconds": seconds,
        "params": (params_before, params_after),
        "macs": (macs_before, macs_after),
    }


def run_one(name: str, tool: str) -> dict[str, Any]:
    """One tool on one model (called in a child process with a memory and time limit)."""
    import torch

    from onnx_graph.testing import randomize_module

    torch.set_num_threads(1)
    zoo_model = next(m for m in transformer_models() if m.name == name)
    module = randomize_module(zoo_model.build(), seed=0).eval()
    runner = run_torch_pruning if tool == "tp" else run_sparsearch
    try:
        result = runner(zoo_model, module)
    except Exception as error:  # noqa: BLE001  (the table reports any failure)
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"[:160]}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def run_child(name: str, tool: str, timeout: int, memory_gb: float) -> dict[str, Any]:
    """Run ``run_one`` in a child process; a crash, timeout or out-of-memory becomes a failure."""

    def limit_memory() -> None:
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        completed = subprocess.run(
            [sys.executable, __file__, "--one", name, "--tool", tool],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit_memory,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout}s"}
    lines = completed.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        return json.loads(lines[-1])
    tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    return {"ok": False, "error": f"exit {completed.returncode}: {tail[:100]}"}


def _reduction(pair: Any) -> str:
    if not pair:
        return "-"
    before, after = pair
    return f"{after / 1e6:.1f}M ({100 * (1 - after / before):.0f}%)"


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | input | ours | exact | params ours | MACs ours | analysis+surgery s | "
        "TP | params TP | MACs TP | TP s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        ours, theirs = row.get("ours", {}), row.get("tp", {})
        ours_ok = "ok" if ours.get("ok") else f"fail: {ours.get('error', '?')[:60]}"
        theirs_ok = "ok" if theirs.get("ok") else f"fail: {theirs.get('error', '?')[:60]}"
        seconds = f"{ours['analysis_s']:.2f}+{ours['surgery_s']:.2f}" if ours.get("ok") else "-"
        lines.append(
            f"| {row['model']} | {row['input']} | {ours_ok} | {ours.get('exact', '-')} | "
            f"{_reduction(ours.get('params'))} | {_reduction(ours.get('macs'))} | {seconds} | "
            f"{theirs_ok} | {_reduction(theirs.get('params'))} | {_reduction(theirs.get('macs'))} | "
            f"{theirs.get('seconds', 0):.2f} |"
        )
    ok = sum(1 for r in results if r.get("ours", {}).get("ok") and r["ours"].get("exact"))
    tp_ok = sum(1 for r in results if r.get("tp", {}).get("ok"))
    lines.append("")
    lines.append(
        f"sparsearch: {ok}/{len(results)} pruned, valid and exact; "
        f"Torch-Pruning: {tp_ok}/{len(results)} pruned and running"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[m.name for m in transformer_models()])
    parser.add_argument("--jsonl", default="bench/zoo_transformers.jsonl")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per model and tool")
    parser.add_argument("--tp-timeout", type=int, default=300, help="seconds for Torch-Pruning")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit per run")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--tool", choices=["tp", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.tool)))
        return
    results = []
    for name in args.models:
        size = next(m.image_size for m in transformer_models() if m.name == name)
        row = {"model": name, "input": size}
        for tool, timeout in (("tp", args.tp_timeout), ("ours", args.timeout)):
            row[tool] = run_child(name, tool, timeout, args.memory_gb)
        results.append(row)
        with open(args.jsonl, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(markdown(results))


if __name__ == "__main__":
    main()
