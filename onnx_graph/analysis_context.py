"""What an op rule sees and records while the analysis walks channel axes."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnx_graph.index_map import IndexMap
from onnx_graph.static_shapes import all_int_dims

logger = logging.getLogger(__name__)

_UNSEEN: tuple[int | None, ...] = (-1,)  # marks a value whose shape was not looked up yet


@dataclass(frozen=True)
class AnalysisOptions:
    """Choices the analysis cannot make from the graph alone.

    Attributes:
        attention: Pruning unit of a split channel axis in attention ([H*D] -> [H, D]):
            ``"head_dim"`` prunes head dimensions uniformly across heads, ``"heads"`` whole heads.
        allow_inexact: Couple channels through channel-mixing normalisations (LayerNorm over the
            channel axis) instead of freezing them; such groups carry ``inexact_reasons`` because
            removing a channel changes the normalisation statistics.
    """

    attention: Literal["head_dim", "heads"] = "head_dim"
    allow_inexact: bool = False


@dataclass
class ChannelAxis:
    """One axis of one value that carries channels: the unit the analysis couples."""

    index: int
    value_name: str
    axis: int
    size: int
    base: int  # first global position id of this axis's channels
    is_parameter: bool
    fill: float | None = 0.0  # value written by zero_out (None: leave untouched)
    frozen_reasons: list[str] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    inexact_reasons: list[str] = field(default_factory=list)


def value_name(value: ir.Value) -> str:
    """The value's name (``prepare`` names every value, so a missing one is a bug)."""
    if value.name is None:
        raise ValueError("value without a name: run onnx_graph.prepare first")
    return value.name


def values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    """Every named value of ``graph``: inputs, initializers and node outputs."""
    values: dict[str, ir.Value] = {v.name: v for v in graph.inputs if v.name}
    values.update(graph.initializers)
    for node in graph:
        for value in node.outputs:
            if value.name:
                values[value.name] = value
    return values


def static_shape(value: ir.Value | None) -> tuple[int | None, ...] | None:
    """The value's shape with symbolic or unknown dimensions as None (None when rank unknown)."""
    if value is None or value.shape is None:
        return None
    dims = value.shape.dims
    if all_int_dims(dims):  # the common case: no copy of each dim
        return dims  # type: ignore[return-value]
    return tuple(d if isinstance(d, int) else None for d in dims)


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy contents of an initializer or constant value, or None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


class AnalysisContext:
    """Records channel axes, their couplings and why some are frozen; drives the walk."""

    def __init__(self, graph: ir.Graph, options: AnalysisOptions | None = None) -> None:
        self.graph = graph
        self.options = options or AnalysisOptions()
        self.axes: list[ChannelAxis] = []
        self._axis_ids: dict[tuple[str, int], int] = {}
        self._edges: list[tuple[int, np.ndarray, int, np.ndarray]] = []
        self._identity_pairs: list[int] = []  # flat: a0, b0, a1, b1, ...
        self._static_shapes: dict[ir.Value, tuple[int | None, ...] | None] = {}
        self._pending: deque[int] = deque()
        self._total = 0
        self.current_node: ir.Node | None = None

    # ----- what rules call -------------------------------------------------------------------
    def couple(
        self,
        a: ir.Value | None,
        axis_a: int,
        b: ir.Value | None,
        axis_b: int,
        mapping: IndexMap | None = None,
    ) -> None:
        """Say that channels of ``a[axis_a]`` and ``b[axis_b]`` must be removed together.

        Without ``mapping`` the axes must have equal sizes (identity). An axis of size 1 on one side
        is a broadcast and couples nothing. Missing optional inputs (None) are ignored.
        """
        if a is None or b is None:
            return
        size_a, size_b = self._axis_size(a, axis_a), self._axis_size(b, axis_b)
        if size_a is None or size_b is None:
            known = (a, axis_a) if size_a is not None else (b, axis_b)
            if self._axis_size(*known) not in (None, 1):
                self.freeze(
                    known[0], known[1], f"is coupled to an axis of unknown size ({self._where()})"
                )
            return
        if size_a <= 1 or size_b <= 1:
            return
        if mapping is None:
            if size_a != size_b:
                self.freeze(a, axis_a, f"size {size_a} coupled to size {size_b} ({self._where()})")
                self.freeze(b, axis_b, f"size {size_b} coupled to size {size_a} ({self._where()})")
                return
            # Position i is position i: the axes merge as wholes (no per-position edges).
            self._identity_pairs += (self._axis_id(a, axis_a), self._axis_id(b, axis_b))
            return
        id_a, id_b = self._axis_id(a, axis_a), self._axis_id(b, axis_b)
        source, target = mapping.pairs()
        if len(source) and (source.max() >= size_a or target.max() >= size_b):
            raise ValueError(f"index map out of range for {a.name}[{axis_a}] -> {b.name}[{axis_b}]")
        self._edges.append((id_a, source, id_b, target))

    def freeze(self, value: ir.Value, axis: int, reason: str) -> None:
        """Mark ``value[axis]`` as not prunable, with a reason naming the node or value."""
        channel_axis = self._channel_axis_or_none(value, axis)
        if channel_axis is not None and reason not in channel_axis.frozen_reasons:
            channel_axis.frozen_reasons.append(reason)

    def mark_inexact(self, value: ir.Value, axis: int, reason: str) -> None:
        """Say that removing channels of ``value[axis]`` changes results beyond the zeroed oracle."""
        channel_axis = self._channel_axis_or_none(value, axis)
        if channel_axis is not None and reason not in channel_axis.inexact_reasons:
            channel_axis.inexact_reasons.append(reason)

    def freeze_node(self, node: ir.Node, port: ir.Value, axis: int, why: str) -> None:
        """Freeze the live axis and say which node and op stopped it."""
        self.freeze(port, axis, f"{why} at {node.op_type} node '{node.name}'")

    def set_fill(self, value: ir.Value | None, axis: int, fill: float | None) -> None:
        """Value ``zero_out`` writes into removed channels of this parameter (default 0)."""
        if value is None or (self._axis_size(value, axis) or 0) <= 1:
            return
        self.axes[self._axis_id(value, axis)].fill = fill

    def live(self, value: ir.Value | None, axis: int) -> bool:
        """Whether ``value[axis]`` is already a channel axis."""
        return value is not None and (value_name(value), axis) in self._axis_ids

    def activate(self, value: ir.Value | None, axis: int) -> None:
        """Make ``value[axis]`` a channel axis without coupling it (used by seeds)."""
        if value is not None and (self._axis_size(value, axis) or 0) > 1:
            self._axis_id(value, axis)

    # ----- walk ---------------------------------------------------------------------------------
    def next_pending(self) -> ChannelAxis | None:
        return self.axes[self._pending.popleft()] if self._pending else None

    def identity_pairs(self) -> np.ndarray:
        """Pairs of axis indices coupled position by position (shape [n, 2])."""
        pairs = self._identity_pairs
        return np.fromiter(pairs, dtype=np.int64, count=len(pairs)).reshape(-1, 2)

    def edges(self) -> list[tuple[int, np.ndarray, int, np.ndarray]]:
        """The couplings that are not identities: (axis a, its positions, axis b, its positions).

        Positions are local to their axis, pairwise coupled.
        """
        return self._edges

    @property
    def total_positions(self) -> int:
        return self._total

    # ----- internals ----------------------------------------------------------------------------
    def _where(self) -> str:
        node = self.current_node
        return f"{node.op_type} node '{node.name}'" if node is not None else "graph"

    def _channel_axis_or_none(self, value: ir.Value, axis: int) -> ChannelAxis | None:
        size = self._axis_size(value, axis)
        return None if size is None or size <= 1 else self.axes[self._axis_id(value, axis)]

    def _axis_size(self, value: ir.Value, axis: int) -> int | None:
        # Shapes do not change during the analysis; couplings ask for the same values many times.
        shape = self._static_shapes.get(value, _UNSEEN)
        if shape is _UNSEEN:
            shape = self._static_shapes[value] = static_shape(value)
        if shape is None or not 0 <= axis < len(shape):
            return None
        return shape[axis]

    def _axis_id(self, value: ir.Value, axis: int) -> int:
        key = (value_name(value), axis)
        found = self._axis_ids.get(key)
        if found is not None:  # most calls: an axis seen before
            node = self.current_node
            if node is not None:
                node_name = node.name
                if node_name:
                    self.axes[found].nodes.add(node_name)
            return found
        size = self._axis_size(value, axis)
        assert size is not None
        is_parameter = value.const_value is not None
        channel_axis = ChannelAxis(len(self.axes), key[0], axis, size, self._total, is_parameter)
        if self.current_node is not None and self.current_node.name:
            channel_axis.nodes.add(self.current_node.name)
        self._total += size
        self.axes.append(channel_axis)
        self._axis_ids[key] = channel_axis.index
        self._pending.append(channel_axis.index)
        if value.is_graph_output():
            channel_axis.frozen_reasons.append(f"touches graph output '{value.name}'")
        if value.is_graph_input():
            channel_axis.frozen_reasons.append(f"touches graph input '{value.name}'")
        return channel_axis.index
