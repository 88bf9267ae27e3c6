"""Accuracy of a model on a dataset split: ONNX graphs in onnxruntime, modules in torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir


def accuracy_onnx(model: ir.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy (in percent) of an ONNX classifier run in onnxruntime on one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = session.run(None, {name: x[start : start + batch_size]})[0]
        correct += int((logits.argmax(axis=1) == y[start : start + batch_size]).sum())
    return 100.0 * correct / max(len(x), 1)


def accuracy_torch(module: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy (in percent) of a torch classifier in eval mode."""
    import torch

    module.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = module(torch.from_numpy(x[start : start + batch_size]))
            correct += int((logits.argmax(dim=1).numpy() == y[start : start + batch_size]).sum())
    return 100.0 * correct / max(len(x), 1)
