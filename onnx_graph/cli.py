"""The ``sparsearch`` command line: inspect groups, prune a model, run the bundled demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import spa.cli_prune
from onnx_graph.analysis import analyze
from onnx_graph.errors import SparsearchError
from onnx_graph.lowering import load
from onnx_graph.report import format_groups, groups_to_json


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsearch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="list pruning groups of an ONNX model")
    inspect.add_argument("model", type=Path)
    inspect.add_argument("--json", action="store_true", help="print JSON")

    prune = commands.add_parser("prune", help="prune an ONNX model")
    spa.cli_prune.add_arguments(prune)

    demo = commands.add_parser("demo", help="prune the bundled model and print the report")
    demo.add_argument("--ratio", type=_ratio, default=0.5)
    demo.add_argument("--output", type=Path, default=None, help="where to write the pruned ONNX")
    return parser


def _inspect(args: argparse.Namespace) -> int:
    groups = analyze(load(args.model))
    print(json.dumps(groups_to_json(groups), indent=1) if args.json else format_groups(groups))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from onnx_graph.demo import run_demo

    return run_demo(args.ratio, args.output)


_COMMANDS = {"inspect": _inspect, "prune": spa.cli_prune.run, "demo": _demo}


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
