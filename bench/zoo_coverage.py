"""Zoo coverage: prune every torchvision classification CNN at ratio 0.5, beside Torch-Pruning.

For each model (weights=None, randomised weights and BatchNorm statistics):
  ours: lowered ONNX -> analysis + surgery -> strict checker + onnxruntime + output shape +
        exactness oracle; params/MACs before and after; analysis+surgery seconds.
  Torch-Pruning 1.6: MetaPruner with L1 magnitude at the same ratio, final classifier ignored;
        ok/fail, params/MACs after, dependency-graph + step seconds.

    python bench/zoo_coverage.py [--models resnet18,resnet50] [--size 224] [--out zoo.jsonl]

Results are appended to a JSONL file as each model finishes and printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnx_graph import analyze, count_cost, lower, prune  # noqa: E402
from onnx_graph.testing import oracle_difference, randomize_module, run_onnx  # noqa: E402
from spa import plan_uniform  # noqa: E402

TRANSFORMER_PREFIXES = ("vit_", "swin_", "maxvit_")
# Models whose default resolution is larger than 224 or that need a minimum size.
# Inputs these models accept: Inception's stem, MaxViT's windows and ViT's position embedding.
MIN_SIZE = {"inception_v3": 299, "maxvit_t": 224, "vit_b_16": 224, "vit_b_32": 224}
MIN_SIZE |= {"vit_l_16": 224, "vit_l_32": 224, "vit_h_14": 224}


class Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Timeout()


def build(name: str) -> torch.nn.Module:
    kwargs: dict[str, Any] = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    return randomize_module(torchvision.models.get_model(name, **kwargs), seed=0).eval()


def run_ours(name: str, size: int) -> dict[str, Any]:
    module = build(name)
    example = torch.randn(1, 3, size, size)
    start = time.perf_counter()
    model = lower(module, (example,), dynamic_batch=True)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    groups = analyze(model)
    plan = plan_uniform(model, groups, 0.5, criterion="l1")
    pruned = prune(model, plan, validate=False)
    analysis_surgery_s = time.perf_counter() - start
    from onnx_graph import check_model

    check_model(pruned)
    inputs = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    output_shape = run_onnx(pruned, inputs)[0].shape
    difference, scale = oracle_difference(model, plan, inputs)
    before, after = count_cost(model), count_cost(pruned)
    return {
        "ok": output_shape == (2, 1000) and difference <= 1e-4 * scale,
        "exact": difference <= 1e-4 * scale,
        "max_diff_rel": difference / max(scale, 1e-12),
        "groups": len(groups),
        "prunable": len(groups.prunable),
        "params_before": before.params,
        "params_after": after.params,
        "macs_before": before.macs,
        "macs_after": after.macs,
        "export_s": export_s,
        "analysis_surgery_s": analysis_surgery_s,
    }


def torch_pruning_step(module: torch.nn.Module, example: torch.Tensor) -> float:
    """Seconds for Torch-Pruning's dependency graph + step: L1, ratio 0.5, 1000-way heads kept."""
    import torch_pruning as tp

    heads = [
        m
        for m in module.modules()
        if (isinstance(m, torch.nn.Linear) and m.out_features == 1000)
        or (isinstance(m, torch.nn.Conv2d) and m.out_channels == 1000)
    ]
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        module,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=heads,
    )
    pruner.step()
    return time.perf_counter() - start


def run_torch_pruning(name: str, size: int) -> dict[str, Any]:
    import torch_pruning as tp

    module = build(name)
    example = torch.randn(1, 3, size, size)
    params_before = sum(p.numel() for p in module.parameters())
    elapsed = torch_pruning_step(module, example)
    with torch.no_grad():
        output = module(torch.randn(2, 3, size, size))
    macs, params = tp.utils.count_ops_and_params(module, example)
    return {
        "tp_ok": tuple(output.shape) == (2, 1000),
        "tp_params_ratio": params / params_before,
        "tp_macs_after": int(macs),
        "tp_s": elapsed,
    }


def measure(
    name: str, size: int, timeout_s: int, torch_pruning: bool = True
) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "size": size}
    runners = [("ours", run_ours), ("tp", run_torch_pruning)]
    for label, runner in runners if torch_pruning else runners[:1]:
        signal.alarm(timeout_s)
        try:
            row.update(runner(name, size))
        except Timeout:
            row[f"{label}_error"] = f"timeout after {timeout_s}s"
        except Exception as error:  # the table must record failures, not stop
            row[f"{label}_error"] = (
                f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"
            )
            traceback.print_exc(limit=2)
        finally:
            signal.alarm(0)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | ours ok | exact (rel diff) | params after | MACs after | analysis+surgery s "
        "| TP ok | TP params after | TP MACs after | TP s | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours_ok = "yes" if r.get("ok") else f"NO ({r.get('ours_error', 'inexact')})"
        tp_ok = "yes" if r.get("tp_ok") else f"NO ({r.get('tp_error', 'bad output')})"
        params = f"{r['params_after'] / r['params_before']:.1%}" if "params_after" in r else "-"
        macs = f"{r['macs_after'] / r['macs_before']:.1%}" if "macs_after" in r else "-"
        tp_params = f"{r['tp_params_ratio']:.1%}" if "tp_params_ratio" in r else "-"
        tp_macs = (
            f"{r['tp_macs_after'] / r['macs_before']:.1%}"
            if "tp_macs_after" in r and "macs_before" in r
            else "-"
        )
        ours_s = r.get("analysis_surgery_s")
        tp_s = r.get("tp_s")
        speedup = f"{tp_s / ours_s:.1f}x" if ours_s and tp_s else "-"
        lines.append(
            f"| {r['model']} | {ours_ok} | {'yes' if r.get('exact') else 'no'} ({r.get('max_diff_rel', float('nan')):.1e}) "
            f"| {params} | {macs} | {ours_s or float('nan'):.2f} | {tp_ok} | {tp_params} | {tp_macs} "
            f"| {tp_s or float('nan'):.2f} | {speedup} |"
        )
    ours_ok = sum(bool(r.get("ok")) for r in rows)
    tp_ok = sum(bool(r.get("tp_ok")) for r in rows)
    lines.append(
        f"\nours: {ours_ok}/{len(rows)} valid and exact; Torch-Pruning: {tp_ok}/{len(rows)} ran"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="", help="comma-separated names (default: every CNN)")
    parser.add_argument("--family", choices=["cnn", "all"], default="cnn")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per model and tool")
    parser.add_argument("--out", type=Path, default=Path("zoo_coverage.jsonl"))
    parser.add_argument(
        "--ours-only", action="store_true", help="skip Torch-Pruning (a quick regression run)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    names = (
        args.models.split(",")
        if args.models
        else torchvision.models.list_models(module=torchvision.models)
    )
    if args.family == "cnn" and not args.models:
        names = [n for n in names if not n.startswith(TRANSFORMER_PREFIXES)]
    done = {}
    if args.out.exists():
        done = {
            json.loads(line)["model"]: json.loads(line)
            for line in args.out.read_text().splitlines()
            if line
        }
    rows = []
    for name in names:
        if name in done:
            rows.append(done[name])
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        row = measure(
            name, max(args.size, MIN_SIZE.get(name, 0)), args.timeout, not args.ours_only
        )
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        rows.append(row)
    print(markdown(rows))


if __name__ == "__main__":
    main()
