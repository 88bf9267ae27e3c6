"""Short fine-tune of a pruned model, done honestly on its zeroed dense equivalent in torch.

The pruned ONNX graph has no PyTorch twin, so the fine-tune trains the original module holding
the (compensated) weights with the removed channels zeroed, re-applying the zero masks after every
step. The oracle guarantees this dense model computes what the pruned graph computes; at the end
the trained weights are written back into the ONNX graph and the channels are cut by surgery, so
accuracy is still measured on the pruned ONNX in onnxruntime.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx_ir as ir

from onnx_graph.plan import PruningPlan
from onnx_graph.surgery import prune, zero_out
from spa.harness.data import Dataset
from spa.harness.train import train_model
from spa.torch_bridge import load_onnx_weights, parameter_sources, store_module_weights


def channel_masks(model: ir.Model, plan: PruningPlan, module: Any) -> dict[str, Any]:
    """Parameter name -> 0/1 tensor (module layout) of the entries the plan removes."""
    import torch

    kept = plan.groups.kept_positions(plan.removed_mask())
    parameters = dict(module.named_parameters())
    masks: dict[str, Any] = {}
    for onnx_name, (name, perm) in parameter_sources(model, module).items():
        if name not in parameters:
            continue
        value = model.graph.initializers[onnx_name]
        assert value.shape is not None
        mask = np.ones(tuple(int(d) for d in value.shape), dtype=np.float32)  # type: ignore[arg-type]
        for axis in range(mask.ndim):
            positions = kept.get((onnx_name, axis))
            if positions is not None:
                drop = np.setdiff1d(np.arange(mask.shape[axis]), positions)
                index: list[Any] = [slice(None)] * mask.ndim
                index[axis] = drop
                mask[tuple(index)] = 0.0
        if perm is not None:
            mask = np.transpose(mask, np.argsort(perm))
        if not mask.all():
            masks[name] = torch.from_numpy(np.ascontiguousarray(mask))
    return masks


def finetune_pruned(
    model: ir.Model,
    plan: PruningPlan,
    module: Any,
    dataset: Dataset,
    epochs: int,
    *,
    lr: float = 1e-3,
    seed: int = 0,
) -> ir.Model:
    """Fine-tune ``model`` (dense, compensated) under ``plan``'s masks; return the pruned graph.

    Args:
        model: Dense graph exported from ``module`` (after any compensation).
        plan: The channels to remove (computed on ``model``'s groups).
        module: The PyTorch module ``model`` came from (copied, never modified).
    """
    student = copy.deepcopy(module)
    zeroed = zero_out(model, plan)
    load_onnx_weights(zeroed, student)
    masks = channel_masks(zeroed, plan, student)
    train_model(student, dataset, epochs, lr=lr, seed=seed, masks=masks)
    return prune(store_module_weights(zeroed, student), plan)
