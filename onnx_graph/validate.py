"""Strict validity checks for rewritten graphs (onnxruntime alone tolerates stale shapes)."""

from __future__ import annotations

import os
import tempfile

import onnx
import onnx_ir as ir

from onnx_graph.errors import ValidationError

_PROTO_LIMIT = 1_800_000_000  # bytes; above this protobuf cannot hold the model in one message


def check_model(model: ir.Model) -> None:
    """Run strict ONNX shape inference and the full checker; raise ValidationError on failure."""
    if _initializer_bytes(model) > _PROTO_LIMIT or _has_external_data(model):
        _check_large(model)  # also resolves external-data references relative to a real file
        return
    proto = ir.to_proto(model)
    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as error:  # onnx raises several unrelated types
        raise ValidationError(f"pruned model is invalid: {_first_line(error)}") from error


def _check_large(model: ir.Model) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        ir.save(model, path, external_data="model.onnx.data")
        try:
            onnx.checker.check_model(path, full_check=True)
            onnx.shape_inference.infer_shapes_path(
                path, path + ".inferred", strict_mode=True, data_prop=True
            )
        except Exception as error:
            raise ValidationError(f"pruned model is invalid: {_first_line(error)}") from error


def _has_external_data(model: ir.Model) -> bool:
    return any(
        isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values()
    )


def _initializer_bytes(model: ir.Model) -> int:
    return sum(
        v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
