"""Per-position magnitudes of weight tensors along their channel axes, one memory pass each.

Magnitude importance sums ``|w|`` (or ``w**2``) of every slice of every parameter member of a
group. A conv or linear weight is a member twice (output channels of one group, input channels of
the next), so both reductions come from one read of the tensor (the compiled ``dual_sums``) and
are cached. Scoring a ResNet-50 reads 100 MB of weights and a ViT-B 350 MB: passes are the cost.
Magnitude criteria prefetch the large members' sums when scoring starts, split between two
threads where the process may use two cores (``ChannelNormCache.prefetch``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from onnx_graph.cores import available_cores

logger = logging.getLogger(__name__)

try:
    from spa._channel_norms import dual_sums
except ImportError:  # not built (source checkout without build_ext): numpy does the same
    dual_sums = None
    logger.info("spa._channel_norms is not built; channel norms use numpy")


def axis_magnitudes(array: np.ndarray, axes: set[int], order: int) -> dict[int, np.ndarray]:
    """For each axis in ``axes``: per position, the sum of ``|x|**order`` over all other axes."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if array.ndim == 0:
        return {}
    result: dict[int, np.ndarray] = {}
    compiled = dual_sums is not None and array.dtype == np.float32
    if compiled and axes & {0, 1}:
        data = np.ascontiguousarray(array)
        if data.ndim == 1:
            first, second, rest = 1, data.shape[0], 1
        else:
            first, second = data.shape[0], data.shape[1]
            rest = math.prod(data.shape[2:])
        per_first = np.empty(first, dtype=np.float64)
        per_second = np.empty(second, dtype=np.float64)
        dual_sums(data, first, second, rest, order, per_first, per_second)
        if data.ndim == 1:
            result[0] = per_second
        else:
            result[0], result[1] = per_first, per_second
    for axis in sorted(axes - set(result)):
        result[axis] = _numpy_axis_magnitude(array, axis, order)
    return {axis: result[axis] for axis in axes}


def _numpy_axis_magnitude(array: np.ndarray, axis: int, order: int) -> np.ndarray:
    before = int(np.prod(array.shape[:axis], dtype=np.int64))
    blocks = array.reshape(before, array.shape[axis], -1)
    magnitude = np.abs(blocks) if order == 1 else np.square(blocks)
    # Reduce the leading axes first, then contiguous rows: ~10x faster than one multi-axis sum.
    return magnitude.sum(axis=0).astype(np.float64).sum(axis=1)


class ChannelNormCache:
    """Axis magnitudes of a model's initializers, computed on first use, both axes at once.

    An entry is reused only while the initializer holds the same tensor object: replacing a
    weight (``value.const_value = ...``) invalidates it.
    """

    def __init__(self, model: ir.Model, order: int) -> None:
        self.model = model
        self.order = order
        self._cache: dict[tuple[str, int], tuple[object, np.ndarray]] = {}

    def per_position(self, value_name: str, axis: int) -> np.ndarray:
        """Sum of ``|w|**order`` over every axis but ``axis``, for each position of ``axis``."""
        value = self.model.graph.initializers[value_name]
        tensor = value.const_value
        if tensor is None:
            raise ValueError(f"initializer {value_name!r} has no data")
        cached = self._cache.get((value_name, axis))
        if cached is not None and cached[0] is tensor:
            return cached[1]
        self._fill(value_name, tensor, axis)
        return self._cache[(value_name, axis)][1]

    def _fill(self, value_name: str, tensor: ir.TensorProtocol, axis: int) -> None:
        array = tensor.numpy()
        wanted = {axis} | ({0, 1} & set(range(array.ndim)) if axis in (0, 1) else set())
        for found_axis, sums in axis_magnitudes(array, wanted, self.order).items():
            self._cache[(value_name, found_axis)] = (tensor, sums)

    def prefetch(self, wanted: Iterable[tuple[str, int]]) -> None:
        """Compute the sums of the large in-memory weights among ``wanted`` now, on two cores.

        The passes are memory-bound (13 GB/s on one core of the 2-core EPYC, ~18 on two), so the
        large tensors are split by bytes between this thread and a helper, each running compiled
        passes with the GIL released. Small and external (memory-mapped) tensors are left to
        ``per_position``. Does nothing on one core.
        """
        if dual_sums is None or available_cores() < 2:
            return
        todo: dict[str, tuple[ir.TensorProtocol, int, int]] = {}
        for value_name, axis in wanted:
            value = self.model.graph.initializers.get(value_name)
            tensor = value.const_value if value is not None else None
            if value_name in todo or type(tensor) is not ir.Tensor:
                continue
            array = tensor.numpy()
            if array.dtype == np.float32 and array.nbytes >= PREFETCH_MIN_BYTES:
                todo[value_name] = (tensor, axis, array.nbytes)
        if len(todo) < 2:
            return
        halves: tuple[list[str], list[str]] = ([], [])
        loads = [0, 0]
        for value_name in sorted(todo, key=lambda name: -todo[name][2]):
            lighter = 0 if loads[0] <= loads[1] else 1
            halves[lighter].append(value_name)
            loads[lighter] += todo[value_name][2]

        def run(names: list[str]) -> None:
            for name in names:
                tensor, axis, _ = todo[name]
                self._fill(name, tensor, axis)

        helper = threading.Thread(target=run, args=(halves[1],), name="sparsearch-norms")
        helper.start()
        try:
            run(halves[0])
        finally:
            helper.join()


#: Weights below this size are summed when first asked for (a thread costs ~0.1 ms).
PREFETCH_MIN_BYTES = 1 << 20
