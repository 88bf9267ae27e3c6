"""``sparsearch prune`` with every criterion, a MAC target and a JSON report.

``add_arguments(parser)`` fills an argparse (sub)parser and ``run(args)`` executes it, so the main
CLI (``onnx_graph/cli.py``) wires it in with two lines::

    prune = commands.add_parser("prune", help="prune an ONNX model")
    spa.cli_prune.add_arguments(prune)      # then dispatch "prune" to spa.cli_prune.run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from onnx_graph.errors import SparsearchError
from onnx_graph.report import format_left_alone


def _number(text: str, kind: type = float) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1), got {value}")
    return value


def _mac_fraction(text: str) -> float:
    value = _number(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"--target-macs is the fraction of MACs kept, in (0, 1]; got {value}"
        )
    return value


def _positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``prune`` arguments (keeps the lead CLI's -o/--ratio/--criterion/--round-to/--exclude/--json)."""
    from spa.allocation import ALLOCATIONS
    from spa.importance import registered_criteria

    parser.add_argument("model", type=Path, help="ONNX model to prune")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="where to write the pruned ONNX"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--ratio",
        type=_fraction,
        default=None,
        help="fraction of channels removed (default 0.5 when no --target-macs)",
    )
    budget.add_argument(
        "--target-macs", type=_mac_fraction, default=None, help="fraction of MACs to keep, e.g. 0.5"
    )
    parser.add_argument("--criterion", default="l1", choices=registered_criteria())
    parser.add_argument(
        "--allocation",
        default="uniform",
        choices=sorted(ALLOCATIONS),
        help="uniform: same fraction per group; global: rank channels across groups",
    )
    parser.add_argument("--round-to", type=_positive_int, default=1, help="keep multiples of this")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="NODE_OR_PATTERN",
        help="glob on node/value names; matching groups are left alone (repeatable)",
    )
    parser.add_argument(
        "--calibration-data",
        type=Path,
        default=None,
        help=".npz with 'x' (inputs) and optionally 'y' (labels): accuracy in the report",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")


def _load_data(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.exists():
        raise SparsearchError(f"{path}: no such calibration data file")
    try:
        archive = np.load(path)
    except Exception as error:
        raise SparsearchError(
            f"{path}: not a readable .npz file ({type(error).__name__})"
        ) from error
    if "x" not in archive:
        raise SparsearchError(
            f"{path}: calibration data needs an array named 'x' (has {sorted(archive.files)})"
        )
    return archive["x"].astype(np.float32), (archive["y"] if "y" in archive else None)


def run(args: argparse.Namespace) -> int:
    """Prune ``args.model`` and write ``args.output``; prints a text or JSON report."""
    from onnx_graph.lowering import load, save
    from spa.harness.evaluate import accuracy_onnx
    from spa.importance import criterion_needs_data, get_criterion
    from spa.pipeline import prune_model

    if args.output.resolve() == args.model.resolve():
        raise SparsearchError(f"{args.output}: refusing to overwrite the input model")
    criterion = get_criterion(args.criterion) if not criterion_needs_data(args.criterion) else None
    if criterion is None:
        raise SparsearchError(
            f"criterion {args.criterion!r} needs the PyTorch module and labelled data; use the Python "
            "API (spa.prune_model with spa.get_criterion(..., module=, data=))"
        )
    model = load(args.model)
    data = _load_data(args.calibration_data) if args.calibration_data else None
    ratio = args.ratio if args.ratio is not None or args.target_macs is not None else 0.5
    start = time.perf_counter()
    try:
        result = prune_model(
            model,
            criterion=criterion,
            ratio=ratio,
            target_macs=args.target_macs,
            allocation=args.allocation,
            round_to=args.round_to,
            exclude=args.exclude,
        )
    except ValueError as error:
        raise SparsearchError(str(error)) from error
    report: dict[str, Any] = result.report
    report["seconds"] = time.perf_counter() - start
    save(result.pruned, args.output)
    if data is not None and data[1] is not None:
        report["totals"]["accuracy_before"] = accuracy_onnx(model, data[0], data[1])
        report["totals"]["accuracy_after"] = accuracy_onnx(result.pruned, data[0], data[1])
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_report(report))
        print(f"wrote {args.output}")
    return 0


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable version of the JSON report."""
    totals = report["totals"]
    lines = [f"criterion {report['criterion']} ({report['allocation']} allocation)"]
    for row in report["groups"]:
        lines.append(
            f"  group {row['group']:3d}: kept {row['kept']:4d}/{row['channels']:<4d} {', '.join(row['parameters'])}"
        )
    lines.append(
        f"params {totals['params_before']} -> {totals['params_after']} ({totals['params_kept']:.1%})"
    )
    lines.append(
        f"MACs   {totals['macs_before']} -> {totals['macs_after']} ({totals['macs_kept']:.1%})"
    )
    lines.extend(format_left_alone(report.get("left_alone", [])))
    if "accuracy_after" in totals:
        lines.append(
            f"accuracy {totals['accuracy_before']:.2f}% -> {totals['accuracy_after']:.2f}%"
        )
    return "\n".join(lines)
