"""Accuracy vs MAC reduction for every criterion, with and without a short fine-tune, beside
Torch-Pruning's Magnitude/Taylor/Hessian importance at the same MACs, on the harness models.

    python bench/accuracy.py                       # all harness models, keep 70/50/30% of MACs
    python bench/accuracy.py --models resnet-digits --targets 0.5 --finetune-epochs 0
    python bench/accuracy.py --jobs 4 --json results.json

Pruned SPA models are evaluated as pruned ONNX graphs in onnxruntime; Torch-Pruning models are
exported the same way and evaluated in onnxruntime too, with MACs counted by the same cost model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPA_CRITERIA = ("random", "l1", "l2", "bn_scale", "taylor", "obspa")
CASES = (
    "resnet-digits",
    "mobilenet-digits",
    "vit-digits",
    "resnet-mnist1d",
    "mobilenet-mnist1d",
    "vit-mnist1d",
)
CALIBRATION = 512  # labelled training samples given to the data-driven criteria (not to OBSPA)


def _emit(row: dict) -> dict:
    """Progress on stderr, one JSON line per result (partial runs stay usable)."""
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def _unreachable(case: Any, target: float, method: str, why: str) -> dict:
    return _emit(
        {
            "model": case.name,
            "target": target,
            "method": method,
            "macs_kept": None,
            "accuracy": None,
            "note": why,
        }
    )


def _spa_row(case: Any, model: Any, groups: Any, target: float, name: str, epochs: int) -> dict:
    import spa
    from spa.harness import accuracy_onnx, finetune_pruned

    data = case.dataset
    calibration = (data.x_train[:CALIBRATION], data.y_train[:CALIBRATION])
    options = {"module": case.module, "data": calibration} if name == "taylor" else {}
    start = time.perf_counter()
    try:
        result = spa.prune_model(
            model, criterion=spa.get_criterion(name, **options), target_macs=target, groups=groups
        )
    except ValueError as error:  # the target is out of reach with the prunable groups
        return _unreachable(case, target, name, str(error))
    row = {
        "model": case.name,
        "target": target,
        "method": name,
        "macs_kept": result.report["totals"]["macs_kept"],
        "accuracy": accuracy_onnx(result.pruned, data.x_test, data.y_test),
        "seconds": time.perf_counter() - start,
    }
    if epochs:
        tuned = finetune_pruned(result.compensated, result.plan, case.module, data, epochs)
        row["accuracy_finetuned"] = accuracy_onnx(tuned, data.x_test, data.y_test)
    return _emit(row)


def _torch_pruning_row(case: Any, base_macs: int, target: float, name: str, epochs: int) -> dict:
    import torch

    from bench.torch_pruning_baseline import prune_with_torch_pruning
    from onnx_graph import count_cost
    from spa.harness import accuracy_onnx
    from spa.harness.train import train_model
    from spa.torch_bridge import lower_with_batchnorm

    data = case.dataset
    example = (torch.from_numpy(data.x_test[:2]),)
    start = time.perf_counter()
    pruned = prune_with_torch_pruning(
        case.module,
        name,
        target,
        data.x_train[:CALIBRATION],
        data.y_train[:CALIBRATION],
        total_macs=base_macs,
    )
    seconds = time.perf_counter() - start
    exported = lower_with_batchnorm(pruned, example)
    kept = count_cost(exported).macs / base_macs
    if kept > target + 0.02:
        return _unreachable(case, target, name, f"Torch-Pruning stopped at {kept:.1%} of the MACs")
    row = {
        "model": case.name,
        "target": target,
        "method": name,
        "macs_kept": kept,
        "accuracy": accuracy_onnx(exported, data.x_test, data.y_test),
        "seconds": seconds,
    }
    if epochs:
        train_model(pruned, data, epochs, lr=1e-3)
        tuned = lower_with_batchnorm(pruned, example)
        row["accuracy_finetuned"] = accuracy_onnx(tuned, data.x_test, data.y_test)
    return _emit(row)


def run_case(
    name: str,
    targets: list[float],
    epochs: int,
    torch_pruning: bool,
    threads: int = 1,
    finetune_targets: tuple[float, ...] = (0.5,),
) -> list[dict]:
    """All rows for one harness model (runs in a worker process)."""
    import torch

    import onnx_graph
    from bench.torch_pruning_baseline import TP_CRITERIA
    from onnx_graph import count_cost
    from spa.harness import accuracy_onnx, load_case
    from spa.torch_bridge import lower_with_batchnorm

    torch.set_num_threads(threads)
    architecture, dataset = name.split("-")
    case = load_case(architecture, dataset)
    model = lower_with_batchnorm(case.module, (torch.from_numpy(case.dataset.x_test[:2]),))
    groups = onnx_graph.analyze(model)
    base_macs = count_cost(model).macs
    rows = [
        _emit(
            {
                "model": name,
                "target": 1.0,
                "method": "dense",
                "macs_kept": 1.0,
                "accuracy": accuracy_onnx(model, case.dataset.x_test, case.dataset.y_test),
            }
        )
    ]
    for target in targets:
        tune = epochs if any(abs(target - t) < 1e-9 for t in finetune_targets) else 0
        rows += [_spa_row(case, model, groups, target, c, tune) for c in SPA_CRITERIA]
        if torch_pruning:
            rows += [_torch_pruning_row(case, base_macs, target, c, tune) for c in TP_CRITERIA]
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table: one line per (model, target, method)."""
    lines = [
        "| model | keep MACs | method | MACs kept | acc no-FT | acc FT |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        tuned = row.get("accuracy_finetuned")
        if row["accuracy"] is None:
            lines.append(
                f"| {row['model']} | {row['target']:.0%} | {row['method']} | unreachable | | |"
            )
            continue
        lines.append(
            f"| {row['model']} | {row['target']:.0%} | {row['method']} | {row['macs_kept']:.3f} "
            f"| {row['accuracy']:.1f} | {'' if tuned is None else f'{tuned:.1f}'} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict]) -> list[str]:
    """The issue's targets at 50% MACs: OBSPA >= magnitude + 5 and >= best Torch-Pruning (no FT)."""
    verdicts = []
    for model in sorted({r["model"] for r in rows}):
        at = {
            r["method"]: r["accuracy"] for r in rows if r["model"] == model and r["target"] == 0.5
        }
        if "obspa" not in at:
            continue
        magnitude = max(at.get("l1", 0.0), at.get("l2", 0.0))
        tp_best = max((v for k, v in at.items() if k.startswith("tp_")), default=float("nan"))
        informed = min(v for k, v in at.items() if k in ("l1", "l2", "obspa", "taylor"))
        verdicts.append(
            f"{model}: obspa {at['obspa']:.1f} vs magnitude {magnitude:.1f} "
            f"({'met' if at['obspa'] >= magnitude + 5 else 'MISSED'}); vs best TP {tp_best:.1f} "
            f"({'met' if not tp_best > at['obspa'] else 'MISSED'}); random {at.get('random', float('nan')):.1f} "
            f"(lowest informed {informed:.1f})"
        )
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--targets", nargs="+", type=float, default=[0.7, 0.5, 0.3])
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument(
        "--finetune-targets",
        nargs="+",
        type=float,
        default=[0.5],
        help="MAC targets at which the fine-tuned accuracy is also measured",
    )
    parser.add_argument("--no-torch-pruning", action="store_true")
    parser.add_argument(
        "--jobs", type=int, default=1, help="harness models run in parallel processes"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = [
        (
            name,
            args.targets,
            args.finetune_epochs,
            not args.no_torch_pruning,
            args.threads,
            tuple(args.finetune_targets),
        )
        for name in args.models
    ]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_case, *zip(*work, strict=True)))
    else:
        results = [run_case(*item) for item in work]
    rows = [row for result in results for row in result]
    print(format_table(rows))
    print()
    print("\n".join(check_targets(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
