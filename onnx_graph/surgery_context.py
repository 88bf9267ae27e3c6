"""What an op rule sees while surgery rewrites its node: new sizes, kept positions, constants."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnx_graph.analysis_context import constant_array, value_name


class SurgeryContext:
    """Access to the pruned graph for ``OpRule.rewrite`` (attributes and shape constants)."""

    def __init__(
        self,
        graph: ir.Graph,
        kept: dict[tuple[str, int], np.ndarray],
        original_sizes: dict[tuple[str, int], int],
        analysed_sizes: dict[tuple[str, int], int] | None = None,
    ) -> None:
        self.graph = graph
        self._kept = kept
        self._original_sizes = original_sizes
        # Sizes of every channel axis as analysed (concrete even where the graph is symbolic).
        self._analysed_sizes = analysed_sizes or {}
        self._changed_values = {name for name, _ in kept}
        self._counter = 0

    def original_size(self, value: ir.Value, axis: int) -> int:
        """Size of ``value[axis]`` before surgery (only for axes that lost positions)."""
        return self._original_sizes[(value_name(value), axis)]

    def kept_positions(self, value: ir.Value | None, axis: int) -> np.ndarray | None:
        """Original positions that stay on ``value[axis]``, or None when nothing was removed."""
        if value is None:
            return None
        return self._kept.get((value_name(value), axis))

    def changed(self, value: ir.Value | None) -> bool:
        return value is not None and value.name in self._changed_values

    def new_size(self, value: ir.Value, axis: int) -> int:
        """Static size of ``value[axis]`` after surgery."""
        assert value.shape is not None
        size = value.shape[axis]
        if isinstance(size, int):
            return size
        # Symbolic in a dynamic-batch graph, static in the analysis.
        kept = self.kept_positions(value, axis)
        if kept is not None:
            return len(kept)
        analysed = self._analysed_sizes.get((value.name or "", axis))
        if analysed is None:
            raise ValueError(f"axis {axis} of '{value.name}' has no static size")
        return analysed

    def constant(self, value: ir.Value | None) -> np.ndarray | None:
        return constant_array(value)

    def set_int_attribute(self, node: ir.Node, name: str, value: int) -> None:
        node.attributes[name] = ir.AttrInt64(name, int(value))

    def replace_constant_input(self, node: ir.Node, index: int, array: np.ndarray) -> ir.Value:
        """Give ``node`` its own new initializer at input ``index`` (shared constants stay intact)."""
        old = node.inputs[index] if index < len(node.inputs) else None
        base = old.name if old is not None and old.name else f"{node.name}_input{index}"
        self._counter += 1
        name = f"{base}__pruned{self._counter}"
        while name in self.graph.initializers:
            self._counter += 1
            name = f"{base}__pruned{self._counter}"
        tensor = ir.Tensor(np.ascontiguousarray(array), name=name)
        value = ir.Value(
            name=name,
            shape=ir.Shape(array.shape),
            type=ir.TensorType(tensor.dtype),
            const_value=tensor,
        )
        self.graph.register_initializer(value)
        if index >= len(node.inputs):
            node.resize_inputs(index + 1)
        node.replace_input_with(index, value)
        return value
