"""Analysis + surgery speed against Torch-Pruning's dependency graph + pruning step.

Same model, same machine, same process, runs interleaved (ours, theirs, ours, ...), medians:
    python bench/analysis_speed.py --models resnet50,vit_b_16 --repeats 3

Ours starts from the already exported ONNX file, loaded fresh for every run with
``onnx_graph.load`` (nothing is cached; load time is its own column), and covers analysis, L1
scoring, planning and surgery in place (``prune(copy=False)``, as Torch-Pruning prunes its module
in place); the strict validity check is timed separately. Torch-Pruning starts from a fresh module
and covers MetaPruner construction (dependency graph) and ``step()`` with L1 magnitude at the same
ratio. Both run on one thread.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.zoo_coverage import torch_pruning_step  # noqa: E402
from onnx_graph import analyze, check_model, load, lower, prune, save  # noqa: E402
from onnx_graph.testing import randomize_module  # noqa: E402
from spa import plan_uniform  # noqa: E402


def ours_once(path: Path, allow_inexact: bool = False) -> tuple[float, float, float]:
    """Seconds to load, to analyse + score + plan + prune, and to check the result."""
    start = time.perf_counter()
    model = load(path)
    loaded = time.perf_counter()
    groups = analyze(model, allow_inexact=allow_inexact)
    plan = plan_uniform(model, groups, 0.5, criterion="l1")
    pruned = prune(model, plan, validate=False, copy=False)
    pruned_at = time.perf_counter()
    check_model(pruned)
    return loaded - start, pruned_at - loaded, time.perf_counter() - pruned_at


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
    parser.add_argument(
        "--allow-inexact",
        action="store_true",
        help="also prune LayerNorm-coupled embedding channels (as Torch-Pruning does)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| model | ours: analysis + scoring + surgery s (median) | load s | strict check s "
        "| Torch-Pruning s (median) | speed-up |"
    )
    print("|---|---|---|---|---|---|")
    workdir = Path(tempfile.mkdtemp(prefix="analysis_speed_"))
    for name in args.models.split(","):
        module = randomize_module(torchvision.models.get_model(name, weights=None), seed=0)
        path = workdir / f"{name}.onnx"
        save(lower(module, (torch.randn(1, 3, args.size, args.size),)), path)
        ours, loads, checks, theirs = [], [], [], []
        for _ in range(args.repeats):
            load_s, elapsed, check = ours_once(path, args.allow_inexact)
            ours.append(elapsed)
            loads.append(load_s)
            checks.append(check)
            try:
                theirs.append(torch_pruning_once(name, args.size))
            except Exception as error:  # record, don't stop
                print(
                    f"Torch-Pruning failed on {name}: {type(error).__name__}: {error}",
                    file=sys.stderr,
                )
                break
        ours_s = statistics.median(ours)
        theirs_s = statistics.median(theirs) if theirs else float("nan")
        print(
            f"| {name} | {ours_s:.3f} | {statistics.median(loads):.3f} "
            f"| {statistics.median(checks):.3f} | {theirs_s:.3f} | {theirs_s / ours_s:.1f}x |"
        )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
