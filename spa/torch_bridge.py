"""Link an exported ONNX graph back to its PyTorch module: parameter names, gradients, weights.

The dynamo exporter keeps parameter names (``layer1.0.conv1.weight``) except for weights it
transposes for a MatMul on 3-D input, which become ``val_N`` constants. ``lower_with_batchnorm``
records those transposes before folding them, so every ONNX initializer that came from a module
tensor maps back to it (``parameter_sources``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx_ir as ir

SOURCES_KEY = "sparsearch.parameter_sources"


def lower_with_batchnorm(
    module: Any, example_inputs: tuple[Any, ...], *, dynamic_batch: bool = True
) -> ir.Model:
    """Export without BatchNorm folding (BN statistics stay visible), then fold constants.

    ``optimize=False`` leaves Expand/Transpose subgraphs on constants and no value shapes; folding
    constants and inferring shapes makes the graph analysable while keeping BatchNormalization nodes.
    """
    import onnxscript

    from onnx_graph.lowering import lower

    model = lower(module, example_inputs, dynamic_batch=dynamic_batch, optimize=False)
    names = {name for name, _ in module.named_parameters()} | {
        name for name, _ in module.named_buffers()
    }
    transposed: dict[str, tuple[str, tuple[int, ...] | None]] = {}
    for node in model.graph:
        source = node.inputs[0] if node.inputs else None
        if node.op_type == "Transpose" and source is not None and source.name in names:
            perm = node.attributes.get("perm")
            order = (
                tuple(perm.value)
                if perm is not None
                else tuple(range(len(source.shape or ()))[::-1])
            )
            transposed[node.outputs[0].name or ""] = (source.name or "", order)
    onnxscript.optimizer.fold_constants(model)
    for name, value in model.graph.initializers.items():
        # The exporter's tensors alias the module's parameters: training the module must not
        # silently rewrite the graph (nor the reverse).
        if value.const_value is not None:
            value.const_value = ir.Tensor(np.array(value.const_value.numpy(), copy=True), name=name)
    ir.passes.common.RemoveUnusedNodesPass()(model)
    ir.passes.common.ShapeInferencePass()(model)
    sources: dict[str, tuple[str, tuple[int, ...] | None]] = {
        name: (name, None) for name in model.graph.initializers if name in names
    }
    sources.update({k: v for k, v in transposed.items() if k in model.graph.initializers})
    model.meta[SOURCES_KEY] = sources
    return model


def parameter_sources(
    model: ir.Model, module: Any
) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    """ONNX initializer name -> (module tensor name, transpose applied by the export or None).

    Uses what ``lower_with_batchnorm`` recorded, else matches names and shapes directly.
    """
    recorded = model.meta.get(SOURCES_KEY)
    if recorded:
        return dict(recorded)
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    sources: dict[str, tuple[str, tuple[int, ...] | None]] = {}
    for name, value in model.graph.initializers.items():
        tensor = tensors.get(name)
        if (
            tensor is not None
            and value.shape is not None
            and tuple(tensor.shape) == tuple(value.shape)
        ):
            sources[name] = (name, None)
    return sources


def _to_onnx_layout(array: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    return array if perm is None else np.transpose(array, perm)


def onnx_gradients(
    model: ir.Model, module: Any, batches: Iterable[tuple[Any, Any]], *, loss: Any = None
) -> dict[str, np.ndarray]:
    """Gradients of the summed loss over ``batches`` w.r.t. each mapped initializer (ONNX layout).

    Args:
        batches: (inputs, labels) torch tensor pairs.
        loss: ``loss(logits, labels)``; cross-entropy when None.
    """
    import torch

    loss = loss or torch.nn.functional.cross_entropy
    sources = parameter_sources(model, module)
    parameters = dict(module.named_parameters())
    module.eval()
    module.zero_grad()
    for inputs, labels in batches:
        loss(module(inputs), labels).backward()
    gradients: dict[str, np.ndarray] = {}
    for onnx_name, (name, perm) in sources.items():
        parameter = parameters.get(name)
        if parameter is not None and parameter.grad is not None:
            gradients[onnx_name] = _to_onnx_layout(parameter.grad.detach().numpy(), perm)
    module.zero_grad()
    return gradients


def load_onnx_weights(model: ir.Model, module: Any) -> list[str]:
    """Copy mapped ONNX initializers into ``module`` (in place); returns the tensor names set."""
    import torch

    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    loaded = []
    with torch.no_grad():
        for onnx_name, (name, perm) in parameter_sources(model, module).items():
            value = model.graph.initializers.get(onnx_name)
            if value is None or value.const_value is None or name not in tensors:
                continue
            array = value.const_value.numpy()
            if perm is not None:
                array = np.transpose(array, np.argsort(perm))
            tensors[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))
            loaded.append(name)
    return loaded


def store_module_weights(model: ir.Model, module: Any) -> ir.Model:
    """A copy of ``model`` whose mapped initializers hold ``module``'s current tensors."""
    copy = model.clone()
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    for onnx_name, (name, perm) in parameter_sources(model, module).items():
        value = copy.graph.initializers.get(onnx_name)
        if value is None or name not in tensors:
            continue
        array = _to_onnx_layout(tensors[name].detach().numpy(), perm)
        value.const_value = ir.Tensor(np.ascontiguousarray(array, dtype=np.float32), name=onnx_name)
    copy.meta[SOURCES_KEY] = model.meta.get(SOURCES_KEY)
    return copy
