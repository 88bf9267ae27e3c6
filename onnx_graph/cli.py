"""The ``sparsearch`` command line: inspect groups, prune a model, run the bundled demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from onnx_graph.analysis import analyze
from onnx_graph.cost import count_cost
from onnx_graph.errors import SparsearchError
from onnx_graph.lowering import load, save
from onnx_graph.report import format_groups, format_prune_report, groups_to_json, prune_report_json


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1), got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from spa.importance import registered_criteria

    parser = argparse.ArgumentParser(prog="sparsearch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="list pruning groups of an ONNX model")
    inspect.add_argument("model", type=Path)
    inspect.add_argument("--json", action="store_true", help="print JSON")

    prune = commands.add_parser("prune", help="prune an ONNX model")
    prune.add_argument("model", type=Path)
    prune.add_argument("-o", "--output", type=Path, required=True)
    prune.add_argument(
        "--ratio", type=_ratio, default=0.5, help="fraction of channels removed per group"
    )
    prune.add_argument("--criterion", default="l1", choices=registered_criteria())
    prune.add_argument("--round-to", type=_positive_int, default=1, help="keep multiples of this")
    prune.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="NODE_OR_PATTERN",
        help="glob on node/value names; matching groups are left alone (repeatable)",
    )
    prune.add_argument("--json", action="store_true", help="print a JSON report")

    demo = commands.add_parser("demo", help="prune the bundled model and print the report")
    demo.add_argument("--ratio", type=_ratio, default=0.5)
    demo.add_argument("--output", type=Path, default=None, help="where to write the pruned ONNX")
    return parser


def _inspect(args: argparse.Namespace) -> int:
    groups = analyze(load(args.model))
    print(json.dumps(groups_to_json(groups), indent=1) if args.json else format_groups(groups))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from spa.allocation import plan_uniform

    if args.output.resolve() == args.model.resolve():
        raise SparsearchError(f"{args.output}: refusing to overwrite the input model")
    model = load(args.model)
    start = time.perf_counter()
    groups = analyze(model)
    plan = plan_uniform(
        model,
        groups,
        args.ratio,
        criterion=args.criterion,
        round_to=args.round_to,
        exclude=args.exclude,
    )
    from onnx_graph.surgery import prune

    pruned = prune(model, plan)
    elapsed = time.perf_counter() - start
    save(pruned, args.output)
    before, after = count_cost(model), count_cost(pruned)
    if args.json:
        report = prune_report_json(before, after, groups, plan)
        report["seconds"] = elapsed
        print(json.dumps(report, indent=1))
    else:
        excluded = [g.id for g in groups if any(g.matches(p) for p in args.exclude)]
        print(format_prune_report(before, after, groups, plan, excluded))
        print(f"analysis + surgery: {elapsed:.2f}s; wrote {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from onnx_graph.demo import run_demo

    return run_demo(args.ratio, args.output)


_COMMANDS = {"inspect": _inspect, "prune": _prune, "demo": _demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return _COMMANDS[args.command](args)
    except SparsearchError as error:
        print(f"sparsearch: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
