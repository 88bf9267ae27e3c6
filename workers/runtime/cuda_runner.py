"""A torch module on a CUDA GPU, prepared for latency measurement: precision, channels-last,
2:4 sparse tensor cores and CUDA-graph replay, with its inputs kept on the device.

What a GPU latency should count is the model's work: a small layer's kernel runs in a few
microseconds while launching it from Python costs tens, and cuSPARSELt's eager path spends
~0.8 ms per call planning (bench/results/gpu_nm_h100.md). So by default the forward pass is
captured once per input shape in a CUDA graph and replayed, and an input array the caller passes
again is not copied to the device again. The output copy back to the host stays in every call:
it is what makes the call synchronous, so a wall-clock timer around the call measures the GPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from workers.runtime.semi_structured import (
    SPARSE_DTYPES,
    SemiStructuredPlan,
    convert_semi_structured,
)

Result = TypeVar("Result")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class _ShapeSlot:
    """Device buffers (and the captured graph) for one set of input shapes."""

    inputs: dict[str, torch.Tensor]
    last_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    graph: torch.cuda.CUDAGraph | None = None
    outputs: list[torch.Tensor] = field(default_factory=list)


def _as_tensors(outputs: object) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in outputs):
        return list(outputs)
    raise TypeError(f"module returned {type(outputs).__name__}; expected tensors")


def capture_graph(
    step: Callable[[], Result], calls: int = 1
) -> tuple[torch.cuda.CUDAGraph, Result]:
    """``calls`` back-to-back calls of ``step`` captured in one CUDA graph.

    Three warm-up calls run first on a side stream, so that cuBLAS and cuSPARSELt choose their
    algorithms and workspaces outside the capture. Returns the graph and the last captured
    call's result, whose tensors every replay overwrites.
    """
    if calls < 1:
        raise ValueError(f"a graph needs at least one call, got {calls}")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            result = step()
    return graph, result


@dataclass(frozen=True)
class CudaRunOptions:
    """How :class:`CudaModuleRunner` runs a module; checked when made.

    Attributes:
        dtype: "float32", "float16" or "bfloat16" for weights and floating-point inputs.
        channels_last: NHWC memory for the module and its 4-D inputs (what tensor-core
            convolutions and the pointwise 2:4 products want).
        semi_structured: give every qualifying 2:4 layer a cuSPARSELt weight (float16 or
            bfloat16 only).
        cuda_graph: replay a CUDA graph captured per input shape instead of launching eagerly.
        resident_inputs: copy an input array to the device only when the caller passes a
            different array object than last time; an array changed in place between calls is
            then not seen (pass a new array, or set this False to copy on every call).
    """

    dtype: str = "float32"
    channels_last: bool = False
    semi_structured: bool = False
    cuda_graph: bool = True
    resident_inputs: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.semi_structured and self.dtype not in SPARSE_DTYPES:
            raise ValueError(
                f"semi_structured needs dtype {' or '.join(SPARSE_DTYPES)}, got {self.dtype!r}"
            )


class CudaModuleRunner:
    """Runs a copy of ``module`` on the current CUDA device; call it with feeds like any runner.

    Args:
        module: the model; it is deep-copied, never moved or changed.
        options: precision, layout, 2:4, graph and input handling (:class:`CudaRunOptions`).

    Attributes:
        plan: which layers run on sparse tensor cores and why the others do not (None when
            ``options.semi_structured`` is off).
    """

    def __init__(self, module: torch.nn.Module, options: CudaRunOptions | None = None) -> None:
        self.options = options = options or CudaRunOptions()
        self.dtype = DTYPES[options.dtype]
        self.module = copy.deepcopy(module).eval().to("cuda", self.dtype)
        if options.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.plan: SemiStructuredPlan | None = (
            convert_semi_structured(self.module) if options.semi_structured else None
        )
        self._slots: dict[tuple, _ShapeSlot] = {}

    def _device_buffer(self, array: np.ndarray) -> torch.Tensor:
        """An empty device tensor for ``array``: floating point in the module's dtype,
        channels-last when the module is and the input is 4-D."""
        floating = np.issubdtype(array.dtype, np.floating)
        host_dtype = torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
        layout = torch.channels_last if self.options.channels_last and array.ndim == 4 else None
        return torch.empty(
            array.shape,
            dtype=self.dtype if floating else host_dtype,
            device="cuda",
            memory_format=layout or torch.contiguous_format,
        )

    def _slot(self, feeds: Mapping[str, np.ndarray]) -> _ShapeSlot:
        signature = tuple((name, np.shape(v), np.asarray(v).dtype.str) for name, v in feeds.items())
        slot = self._slots.get(signature)
        if slot is None:
            inputs = {name: self._device_buffer(np.asarray(v)) for name, v in feeds.items()}
            slot = self._slots[signature] = _ShapeSlot(inputs)
        for name, value in feeds.items():
            if self.options.resident_inputs and slot.last_arrays.get(name) is value:
                continue
            array = np.ascontiguousarray(value)
            slot.inputs[name].copy_(torch.from_numpy(array))
            slot.last_arrays[name] = value
        return slot

    def _capture(self, slot: _ShapeSlot) -> None:
        args = list(slot.inputs.values())
        try:
            slot.graph, slot.outputs = capture_graph(lambda: _as_tensors(self.module(*args)))
        except RuntimeError as error:
            raise RuntimeError(
                f"the module cannot be captured in a CUDA graph ({error}); "
                "load it with cuda_graph=False"
            ) from error

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            slot = self._slot(feeds)
            if self.options.cuda_graph:
                if slot.graph is None:
                    self._capture(slot)
                assert slot.graph is not None
                slot.graph.replay()
                outputs = slot.outputs
            else:
                outputs = _as_tensors(self.module(*slot.inputs.values()))
            return [output.float().cpu().numpy() for output in outputs]
