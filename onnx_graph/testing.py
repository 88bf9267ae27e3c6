"""Test utilities shared by the suites and benchmarks: random weights, onnxruntime runs, the oracle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from onnx_graph.plan import PruningPlan
from onnx_graph.surgery import prune, zero_out


def randomize_module(module: Any, seed: int = 0) -> Any:
    """Give every parameter and norm statistic random values (in place; returns the module).

    Fresh models are too regular for an exactness test: exporters merge identical initializers and
    some heads start at zero. BatchNorm gets random running statistics, affine terms near 1 and 0.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for submodule in module.modules():
            if isinstance(submodule, torch.nn.modules.batchnorm._BatchNorm):
                mean, variance = submodule.running_mean, submodule.running_var
                if mean is not None and variance is not None:
                    mean.normal_(0.0, 0.1, generator=generator)
                    variance.uniform_(0.5, 2.0, generator=generator)
            for name, parameter in submodule.named_parameters(recurse=False):
                if parameter.dim() <= 1:
                    center = 1.0 if "weight" in name else 0.0
                    parameter.copy_(
                        center + 0.1 * torch.randn(parameter.shape, generator=generator)
                    )
                else:
                    fan_in = max(1, parameter[0].numel())
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
    return module


def run_onnx(
    model: ir.Model, inputs: Mapping[str, np.ndarray] | np.ndarray, threads: int = 1
) -> list[np.ndarray]:
    """Run ``model`` in onnxruntime on CPU; a single array feeds the first graph input."""
    import onnxruntime as ort

    if any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values()):
        model = model.clone()
        ir.external_data.load_to_model(model)  # a session built from bytes cannot open side files
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(
        ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    if isinstance(inputs, np.ndarray):
        inputs = {session.get_inputs()[0].name: inputs}
    return session.run(None, dict(inputs))


def oracle_difference(
    model: ir.Model, plan: PruningPlan, inputs: Mapping[str, np.ndarray] | np.ndarray
) -> tuple[float, float]:
    """(max abs difference between pruned and zeroed outputs, max abs zeroed output).

    The exactness oracle holds when the first is at most 1e-4 of the second.
    """
    pruned_outputs = run_onnx(prune(model, plan), inputs)
    zeroed_outputs = run_onnx(zero_out(model, plan), inputs)
    difference = max(
        float(np.abs(p - z).max()) for p, z in zip(pruned_outputs, zeroed_outputs, strict=True)
    )
    scale = max(float(np.abs(z).max()) for z in zeroed_outputs)
    return difference, scale
