"""Whole-model execution of an ONNX graph whose weight layers are sparse.

The model stays a standard ONNX file (pruned weights are zeros), loadable by plain onnxruntime.
At load time, every Conv/Gemm/MatMul whose weight is sparse enough is packed for the C kernels,
depthwise convolutions, 3x3 RGB stems, GlobalAveragePool and Flatten go to the kernels too, a
following residual Add and Relu/Clip are fused into the layer, and a sparse convolution feeding
only a depthwise one (and the 1x1 projection after it) become one fused layer (``fusion``). The
graph is cut at those layers and each run of the remaining dense nodes becomes one onnxruntime
session; ``segment_count`` exposes how many (MobileNetV2 needs none). Each layer prepares its C
call once per input shape, so a run costs microseconds of Python per layer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from workers.runtime import glue_ops  # noqa: F401 - registers GlobalAveragePool and Flatten
from workers.runtime.fusion import fuse_steps
from workers.runtime.sparse_ops import KernelLayer, initializer_arrays, make_layer

logger = logging.getLogger(__name__)


def session_options(
    threads: int, optimization: str = "all", spinning: bool = True
) -> ort.SessionOptions:
    """onnxruntime options stated explicitly: threads, sequential execution, optimisation level.

    Args:
        threads: intra-op threads (inter-op is 1: sequential execution).
        optimization: "disable", "basic", "extended" or "all".
        spinning: whether idle intra-op threads spin; the executor turns it off so spinning
            onnxruntime threads do not take the cores from the kernels between segments.
    """
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def _clip_bounds(
    node: onnx.NodeProto, constants: Mapping[str, np.ndarray]
) -> tuple[float, float] | None:
    """Bounds of a Relu/Clip node with constant limits, None for anything else."""
    if node.op_type == "Relu":
        return 0.0, float("inf")
    if node.op_type != "Clip":
        return None
    bounds = [-float("inf"), float("inf")]
    for attr in node.attribute:  # opset < 11
        if attr.name in ("min", "max"):
            bounds[attr.name == "max"] = float(attr.f)
    for index, name in enumerate(node.input[1:3]):
        if name:
            if name not in constants:
                return None
            bounds[index] = float(np.asarray(constants[name]).reshape(()))
    return bounds[0], bounds[1]


@dataclass
class _Segment:
    """Consecutive dense nodes run by one onnxruntime session."""

    nodes: list[onnx.NodeProto]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    session: ort.InferenceSession | None = None


class SparseExecutor:
    """Runs an ONNX model with its sparse weight layers on the C kernels, the rest in onnxruntime.

    Args:
        model: ONNX model (dense-with-zeros weights).
        threads: threads for the kernels and for each onnxruntime session.
        fmt: "auto" (the largest block that stores no extra zeros, else CSR), or one of
            "csr", "4x1", "8x1", "4x4" for every sparse layer.
        min_sparsity: layers with fewer zero weights stay dense in onnxruntime.
        optimization: onnxruntime graph optimisation level for the dense segments.

    Each kernel layer reuses its output arrays between runs, so one executor must not run from
    two threads at once (make one executor per thread).

    Example:
        >>> executor = SparseExecutor(onnx.load("pruned.onnx"), threads=2)  # doctest: +SKIP
        >>> logits = executor.run({"input": batch})[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        threads: int = 1,
        fmt: str = "auto",
        min_sparsity: float = 0.5,
        optimization: str = "all",
    ) -> None:
        self.threads = threads
        graph = model.graph
        inferred = onnx.shape_inference.infer_shapes(model)
        self._types = {
            info.name: info.type
            for info in [*inferred.graph.value_info, *graph.input, *graph.output]
        }
        constants = initializer_arrays(graph)
        nodes = list(graph.node)
        self._consumers: dict[str, list[int]] = {}
        for index, node in enumerate(nodes):
            for name in node.input:
                self._consumers.setdefault(name, []).append(index)
        graph_outputs = {out.name for out in graph.output}
        self.input_names = [i.name for i in graph.input if i.name not in constants]
        self.output_names = [o.name for o in graph.output]

        steps: list[KernelLayer | _Segment] = []
        fused: set[int] = set()
        available = set(self.input_names)  # values computed before the current node
        for index, node in enumerate(nodes):
            if index in fused or all(name in constants for name in node.output):
                continue  # Constant/Identity-of-constant outputs are folded in where used
            layer = make_layer(node, constants, fmt, min_sparsity)
            if layer is not None and layer.weights is None and steps:
                # A weight-free glue op after dense nodes stays with them: on its own it would
                # cut their segment in two (one more session.run) to save microseconds.
                layer = None if isinstance(steps[-1], _Segment) else layer
            if layer is None:
                if not steps or not isinstance(steps[-1], _Segment):
                    steps.append(_Segment([]))
                steps[-1].nodes.append(node)  # type: ignore[union-attr]
            else:
                followers = self._fuse_followers(
                    layer, nodes, index, available, constants, graph_outputs
                )
                fused |= followers
                # Fused nodes run in this step: their outputs exist for every later node.
                for follower in followers:
                    available.update(nodes[follower].output)
                steps.append(layer)
            available.update(node.output)
        self.steps = steps
        self._wire_segments(model, constants, graph_outputs, optimization)
        # After wiring: segments of only constants (Clip bounds) no longer sit between layers.
        self.steps = fuse_steps(
            self.steps, lambda name: self._only_consumer(name, nodes, graph_outputs) is not None
        )
        self.kernel_layers = [step for step in self.steps if isinstance(step, KernelLayer)]
        self.sparse_layers = [layer for layer in self.kernel_layers if layer.is_sparse]

    def _only_consumer(self, name: str, nodes, graph_outputs) -> int | None:
        """Index of the single node reading ``name``, None if it is shared or a graph output."""
        readers = self._consumers.get(name, [])
        if len(readers) != 1 or name in graph_outputs:
            return None
        return readers[0]

    def _same_shape(self, first: str, second: str) -> bool:
        """True when shape inference gave both values the same full shape (no broadcasting)."""
        shapes = []
        for name in (first, second):
            value_type = self._types.get(name)
            if value_type is None or not value_type.tensor_type.HasField("shape"):
                return False
            shapes.append([d.dim_param or d.dim_value for d in value_type.tensor_type.shape.dim])
        return shapes[0] == shapes[1] and all(dim != 0 for dim in shapes[0])

    def _fuse_followers(self, layer, nodes, index, available, constants, graph_outputs) -> set[int]:
        """Fuse a residual Add whose other input already exists, then a Relu/Clip, into layer."""
        fused: set[int] = set()
        follower = self._only_consumer(layer.output_name, nodes, graph_outputs)
        if follower is not None and nodes[follower].op_type == "Add" and layer.is_sparse:
            add = nodes[follower]
            other = add.input[1] if add.input[0] == layer.output_name else add.input[0]
            fusable = other in available and other not in constants
            if fusable and other != layer.output_name and self._same_shape(other, add.output[0]):
                layer.residual_name, layer.output_name = other, add.output[0]
                fused.add(follower)
                follower = self._only_consumer(layer.output_name, nodes, graph_outputs)
        if follower is not None:
            bounds = _clip_bounds(nodes[follower], constants)
            if bounds is not None:
                layer.clip, layer.output_name = bounds, nodes[follower].output[0]
                fused.add(follower)
        return fused

    def _wire_segments(self, model, constants, graph_outputs, optimization: str) -> None:
        """Give each segment its boundary values and an onnxruntime session of its own."""
        needed_later: list[set[str]] = [set() for _ in self.steps]
        live = set(graph_outputs)
        for position in range(len(self.steps) - 1, -1, -1):
            needed_later[position] = set(live)
            step = self.steps[position]
            if isinstance(step, KernelLayer):
                live |= {step.input_name, step.residual_name or step.input_name}
            else:
                live |= {name for node in step.nodes for name in node.input if name}
        for position, step in enumerate(self.steps):
            if isinstance(step, KernelLayer):
                continue
            produced = [name for node in step.nodes for name in node.output if name]
            consumed = [name for node in step.nodes for name in node.input if name]
            step.inputs = list(dict.fromkeys(
                name for name in consumed if name not in produced and name not in constants
            ))  # fmt: skip
            step.outputs = [name for name in produced if name in needed_later[position]]
            if step.outputs:  # segments of only constants feed fused layers: never run
                step.session = self._session(model, step, constants, optimization)
        self.steps = [step for step in self.steps if not isinstance(step, _Segment) or step.outputs]

    def _value_info(self, name: str) -> onnx.ValueInfoProto:
        if name not in self._types:
            raise ValueError(f"no type for {name!r}: run shape inference on the model first")
        info = onnx.ValueInfoProto(name=name)
        info.type.CopyFrom(self._types[name])
        return info

    def _session(self, model, segment: _Segment, constants, optimization: str):
        produced = {name for node in segment.nodes for name in node.output}
        used = {name for node in segment.nodes for name in node.input} - produced
        # Constant-node outputs made in another segment become initializers here.
        initializers = [
            numpy_helper.from_array(np.asarray(constants[name]), name)
            for name in sorted(used)
            if name in constants
        ]
        graph = onnx.helper.make_graph(
            segment.nodes,
            "segment",
            [self._value_info(name) for name in segment.inputs],
            [self._value_info(name) for name in segment.outputs],
            initializer=initializers,
        )
        sub = onnx.helper.make_model(graph, opset_imports=model.opset_import)
        sub.ir_version = model.ir_version
        return ort.InferenceSession(
            sub.SerializeToString(), session_options(self.threads, optimization, spinning=False),
            providers=["CPUExecutionProvider"],
        )  # fmt: skip

    @property
    def segment_count(self) -> int:
        """Number of onnxruntime sessions run per inference (the glue overhead)."""
        return sum(isinstance(step, _Segment) for step in self.steps)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model; returns the graph outputs in order, like ``InferenceSession.run``."""
        values: dict[str, np.ndarray] = dict(feeds)
        for step in self.steps:
            if isinstance(step, KernelLayer):
                residual = values[step.residual_name] if step.residual_name else None
                values[step.output_name] = step.run(values[step.input_name], self.threads, residual)
            else:
                assert step.session is not None
                results = step.session.run(step.outputs, {n: values[n] for n in step.inputs})
                values.update(zip(step.outputs, results, strict=True))
        # Kernel outputs live in reusable workspaces: hand the caller its own copies.
        return [np.array(values[name]) for name in self.output_names]
