"""Analysis + surgery speed against Torch-Pruning's dependency graph + pruning step.

Same model, same machine, same process, runs interleaved (ours, theirs, ours, ...), medians:
    python bench/analysis_speed.py --models resnet50,vit_b_16 --repeats 3

Ours starts from the already exported ONNX file, loaded fresh for every run with
``onnx_graph.load`` (nothing is cached; load time is its own column), and covers analysis, L1
scoring, planning and surgery in place (``prune(copy=False)``, as Torch-Pruning prunes its module
in place); the strict validity check is timed separately. Torch-Pruning starts from a fresh module
and covers MetaPruner construction (dependency graph) and ``step()`` with L1 magnitude at the same
ratio.

Threads: Torch-Pruning runs with ``--torch-threads`` torch threads (default 1). Ours is Python on
one thread plus, where the process may use two or more cores, one helper thread for the
memory-bound passes (weight norms in scoring, copies of kept weights in surgery). Run the whole
bench under ``taskset -c 0`` to give each side one core.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.zoo_coverage import torch_pruning_step  # noqa: E402
from onnx_graph import analyze, check_model, load, lower, prune, save  # noqa: E402
from onnx_graph.cores import available_cores  # noqa: E402
from onnx_graph.testing import randomize_module  # noqa: E402
from spa import plan_uniform  # noqa: E402


class OursTimes(NamedTuple):
    """Seconds of one run of ours, per stage."""

    load: float
    analysis: float
    scoring: float  # L1 scores and the plan
    surgery: float
    check: float

    @property
    def total(self) -> float:
        """Analysis + scoring + surgery: what is compared with Torch-Pruning."""
        return self.analysis + self.scoring + self.surgery


def ours_once(path: Path, allow_inexact: bool = False) -> OursTimes:
    """Seconds to load, analyse, score and plan, prune, and check the result."""
    marks = [time.perf_counter()]
    model = load(path)
    marks.append(time.perf_counter())
    groups = analyze(model, allow_inexact=allow_inexact)
    marks.append(time.perf_counter())
    plan = plan_uniform(model, groups, 0.5, criterion="l1")
    marks.append(time.perf_counter())
    pruned = prune(model, plan, validate=False, copy=False)
    marks.append(time.perf_counter())
    check_model(pruned)
    marks.append(time.perf_counter())
    return OursTimes(*(after - before for before, after in itertools.pairwise(marks)))


def torch_pruning_once(name: str, size: int) -> float:
    module = randomize_module(torchvision.models.get_model(name, weights=None), seed=0).eval()
    return torch_pruning_step(module, torch.randn(1, 3, size, size))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1, help="for Torch-Pruning")
    parser.add_argument(
        "--allow-inexact",
        action="store_true",
        help="also prune LayerNorm-coupled embedding channels (as Torch-Pruning does)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    print(
        f"cores available: {available_cores()}, Torch-Pruning torch threads: {args.torch_threads}\n"
    )
    print(
        "| model | ours: analysis + scoring + surgery s (median) | load s | strict check s "
        "| Torch-Pruning s (median) | speed-up |"
    )
    print("|---|---|---|---|---|---|")
    workdir = Path(tempfile.mkdtemp(prefix="analysis_speed_"))
    stages: dict[str, dict[str, float]] = {}
    for name in args.models.split(","):
        module = randomize_module(torchvision.models.get_model(name, weights=None), seed=0)
        path = workdir / f"{name}.onnx"
        save(lower(module, (torch.randn(1, 3, args.size, args.size),)), path)
        runs: list[OursTimes] = []
        theirs: list[float] = []
        for _ in range(args.repeats):
            runs.append(ours_once(path, args.allow_inexact))
            try:
                theirs.append(torch_pruning_once(name, args.size))
            except Exception as error:  # record, don't stop
                print(
                    f"Torch-Pruning failed on {name}: {type(error).__name__}: {error}",
                    file=sys.stderr,
                )
                break
        ours_s = statistics.median(run.total for run in runs)
        theirs_s = statistics.median(theirs) if theirs else float("nan")
        print(
            f"| {name} | {ours_s:.3f} | {statistics.median(run.load for run in runs):.3f} "
            f"| {statistics.median(run.check for run in runs):.3f} | {theirs_s:.3f} "
            f"| {theirs_s / ours_s:.1f}x |"
        )
        stages[name] = {
            stage: statistics.median(getattr(run, stage) for run in runs)
            for stage in ("analysis", "scoring", "surgery")
        }
    shutil.rmtree(workdir, ignore_errors=True)
    print("\nOurs per stage (medians, ms):\n\n| model | analysis | scoring + plan | surgery |")
    print("|---|---|---|---|")
    for name, medians in stages.items():
        cells = " | ".join(f"{seconds * 1000:.1f}" for seconds in medians.values())
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
