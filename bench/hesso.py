"""Benchmark: HESSO and HESSO-CRIC against magnitude-prune-then-fine-tune at equal training budget.

Every method gets the same number of epochs in total: the dense model trains for all of them;
HESSO trains from scratch (plain steps, then pruning periods, then recovery) and is evaluated on
its constructed subnet; prune-then-fine-tune trains dense for half, removes the lowest-L1 channels
of every group (``spa.plan_uniform``) and fine-tunes the smaller module for the other half.

    python bench/hesso.py --epochs 30 --seeds 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Measure this checkout, not whatever copy of sparsearch is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnx_graph.testing import run_onnx  # noqa: E402
from spa.allocation import plan_uniform  # noqa: E402
from spa.group_mapping import map_groups  # noqa: E402
from spa.harness_lite import HARNESS, Dataset, evaluate, steps_per_epoch, train  # noqa: E402
from spa.sparse_training import SparseTraining  # noqa: E402
from spa.subnet import prune_module  # noqa: E402

LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def run_dense(factory: Callable[[], nn.Module], data: Dataset, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = factory()
    train(model, data, sgd(model), epochs, seed=seed)
    return {"acc": evaluate(model, data.x_test, data.y_test), "sparsity": 0.0}


def run_hesso(
    factory: Callable[[], nn.Module],
    data: Dataset,
    epochs: int,
    seed: int,
    sparsity: float,
    cric: bool,
) -> dict:
    torch.manual_seed(seed)
    model = factory()
    sparse = SparseTraining(model, (data.x_train[:2],))
    total = epochs * steps_per_epoch(data)
    probe = torch.Generator().manual_seed(seed + 1)
    index = torch.randperm(len(data.y_train), generator=probe)[:512]
    optimizer = sparse.hesso(
        variant="sgd",
        lr=LR,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
        target_group_sparsity=sparsity,
        start_pruning_step=int(0.2 * total),
        pruning_steps=int(0.4 * total),
        pruning_periods=5,
        cric=sparse.cric(data.x_train[index], data.y_train[index]) if cric else None,
    )
    train(model, data, optimizer, epochs, seed=seed)
    metrics = optimizer.metrics()
    subnet = sparse.construct_subnet()
    acc = evaluate(subnet.module, data.x_test, data.y_test)
    reference = subnet.module(data.x_test[:64]).detach().numpy()
    onnx_diff = float(np.abs(run_onnx(subnet.onnx, data.x_test[:64].numpy())[0] - reference).max())
    return {
        "acc": acc,
        "sparsity": metrics["group_sparsity"],
        "onnx_diff": onnx_diff,
        "params": sum(p.numel() for p in subnet.module.parameters()),
    }


def run_prune_finetune(
    factory: Callable[[], nn.Module], data: Dataset, epochs: int, seed: int, sparsity: float
) -> dict:
    torch.manual_seed(seed)
    model = factory()
    train(model, data, sgd(model), epochs // 2, seed=seed)
    mapping = map_groups(model, (data.x_train[:2],))
    plan = plan_uniform(mapping.model, mapping.groups, sparsity, criterion="l1")
    mapped = {g.group_id for g in mapping.mapped}
    removed = {g: c for g, c in plan.removed.items() if g in mapped}
    pruned = prune_module(model, mapping, removed)
    train(pruned, data, sgd(pruned), epochs - epochs // 2, seed=seed + 100)
    total = max(1, mapping.num_channels)
    return {
        "acc": evaluate(pruned, data.x_test, data.y_test),
        "sparsity": sum(map(len, removed.values())) / total,
        "params": sum(p.numel() for p in pruned.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("--models", nargs="+", default=list(HARNESS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for name in args.models:
        dataset_factory, model_factory = HARNESS[name]
        data = dataset_factory()
        start = time.perf_counter()
        dense = [run_dense(model_factory, data, args.epochs, s)["acc"] for s in range(args.seeds)]
        dense_params = sum(p.numel() for p in model_factory().parameters())
        for sparsity in args.sparsity:
            results: dict[str, list[dict]] = {"hesso": [], "cric": [], "ptf": []}
            for seed in range(args.seeds):
                results["hesso"].append(
                    run_hesso(model_factory, data, args.epochs, seed, sparsity, False)
                )
                results["cric"].append(
                    run_hesso(model_factory, data, args.epochs, seed, sparsity, True)
                )
                results["ptf"].append(
                    run_prune_finetune(model_factory, data, args.epochs, seed, sparsity)
                )
            mean = {k: float(np.mean([r["acc"] for r in v])) for k, v in results.items()}
            rows.append((name, sparsity, float(np.mean(dense)), mean, results, dense_params))
            print(
                f"{name} {sparsity}: dense {np.mean(dense):.2f} "
                + " ".join(f"{k} {v:.2f}" for k, v in mean.items())
                + f" ({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
    print(
        "\n| model | group sparsity | dense | HESSO | HESSO-CRIC | prune+fine-tune | params HESSO / CRIC / PTF "
        "| max ONNX diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, sparsity, dense_acc, mean, results, dense_params in rows:
        real = np.mean([r["sparsity"] for r in results["hesso"]])
        params = " / ".join(
            f"{np.mean([r['params'] for r in results[k]]) / dense_params:.0%}"
            for k in ("hesso", "cric", "ptf")
        )
        diff = max(r["onnx_diff"] for r in results["hesso"] + results["cric"])
        print(
            f"| {name} | {sparsity:.0%} (got {real:.1%}) | {dense_acc:.2f} | {mean['hesso']:.2f} | "
            f"{mean['cric']:.2f} | {mean['ptf']:.2f} | {params} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
