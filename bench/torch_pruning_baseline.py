"""Torch-Pruning baselines at a MAC target, on the harness modules (for bench/accuracy.py)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

TP_CRITERIA = ("tp_magnitude", "tp_taylor", "tp_hessian")


def _ignored_layers(module: Any) -> list[Any]:
    """The head always; for the ViT, every layer whose output is the embedding or attention
    width, so Torch-Pruning prunes what SPA can (stem channels and MLP hidden units)."""
    ignored = [module.fc]
    if hasattr(module, "blocks") and hasattr(module, "embed"):
        ignored.append(module.embed)
        for block in module.blocks:
            ignored += [block.attention.qkv, block.attention.proj, block.fc2]
    return ignored


def _importance(name: str) -> Any:
    import torch_pruning as tp

    return {
        "tp_magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
        "tp_taylor": lambda: tp.importance.TaylorImportance(),
        "tp_hessian": lambda: tp.importance.HessianImportance(),
    }[name]()


def _feed_gradients(
    name: str, module: Any, importance: Any, x: torch.Tensor, y: torch.Tensor
) -> None:
    module.zero_grad()
    if name == "tp_taylor":
        torch.nn.functional.cross_entropy(module(x), y).backward()
    elif name == "tp_hessian":
        importance.zero_grad()
        for index in range(min(len(x), 32)):
            module.zero_grad()
            torch.nn.functional.cross_entropy(
                module(x[index : index + 1]), y[index : index + 1]
            ).backward()
            importance.accumulate_grad(module)


def layer_macs(module: Any, example: torch.Tensor) -> int:
    """Per-sample MACs of the Conv and Linear layers (what ``onnx_graph.count_cost`` counts, less
    activation-by-activation MatMuls, which pruning here does not change)."""
    total = [0]

    def hook(layer: Any, inputs: Any, output: torch.Tensor) -> None:
        if isinstance(layer, torch.nn.Linear):
            total[0] += output[:1].numel() * layer.in_features
        else:
            total[0] += output[:1].numel() * (layer.weight[0].numel())

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
    ]
    with torch.no_grad():
        module(example[:1])
    for handle in handles:
        handle.remove()
    return total[0]


def prune_with_torch_pruning(
    module: Any,
    name: str,
    target_macs: float,
    x_calib: np.ndarray,
    y_calib: np.ndarray,
    *,
    total_macs: int | None = None,
    steps: int = 40,
) -> Any:
    """A pruned copy of ``module`` keeping at most ``target_macs`` of ``total_macs``.

    Uniform per-layer ratios (MetaPruner, not global), raised step by step until the target holds.
    MACs are Conv/Linear MACs plus the constant rest of ``total_macs`` (the ONNX cost model's
    count of the dense model), so both libraries are held to the same count.
    """
    import torch_pruning as tp

    pruned = copy.deepcopy(module).eval()
    x, y = torch.from_numpy(x_calib), torch.from_numpy(y_calib)
    example = x[:2]
    importance = _importance(name)
    pruner = tp.pruner.MetaPruner(
        pruned,
        example,
        importance=importance,
        pruning_ratio=0.95,
        iterative_steps=steps,
        ignored_layers=_ignored_layers(pruned),
    )
    layers = layer_macs(pruned, example)
    base = total_macs if total_macs is not None else layers
    fixed = base - layers
    for _ in range(steps):
        _feed_gradients(name, pruned, importance, x, y)
        pruner.step()
        if (layer_macs(pruned, example) + fixed) / base <= target_macs:
            break
    pruned.zero_grad()
    return pruned.eval()
