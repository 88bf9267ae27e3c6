"""The kept part of a weight tensor after pruning: a gather along its cut axes.

Surgery keeps a sorted subset of positions on one or more axes of every member initializer. The
compiled ``_kept_gather`` copies every kept block in one pass, cut axes together; numpy's ``take``
needs a pass per axis and is slow along the last axis (a ViT's MatMul weights are cut there).

``compact_kept`` writes the result into the tensor's own buffer and shrinks it: no new memory is
touched (page faults on fresh pages cost as much as the copy) and the old array need not be
released. It is only for arrays nobody else holds; ``exclusively_owned`` tells.
"""

from __future__ import annotations

import logging
import math
import sys
import threading

import numpy as np

from onnx_graph.cores import available_cores

logger = logging.getLogger(__name__)

try:
    from onnx_graph._kept_gather import gather, gather_many
except ImportError:  # not built (source checkout without build_ext): numpy does the same
    gather = gather_many = None
    logger.info("onnx_graph._kept_gather is not built; surgery slices with numpy")

Cuts = list[tuple[int, np.ndarray]]  # (axis, kept positions in increasing order)


def kept_slices(array: np.ndarray, cuts: Cuts) -> np.ndarray:
    """A new array with only the kept positions along each cut axis."""
    plan = _gather_plan(array, cuts)
    if plan is None:
        return _numpy_kept_slices(array, cuts)
    shape, sizes, kept, block = plan
    result = np.empty(shape, dtype=array.dtype)
    gather(np.ascontiguousarray(array), result, sizes, kept, block)
    return result


def compact_kept(array: np.ndarray, cuts: Cuts) -> np.ndarray:
    """``kept_slices`` written into ``array``'s own buffer, which then shrinks to fit.

    ``array`` must be exclusively owned (``exclusively_owned``): its data is overwritten, and the
    array itself becomes the result. Falls back to a new array where the gather is not built.
    """
    plan = _gather_plan(array, cuts)
    if plan is None or not array.flags.c_contiguous:
        return _numpy_kept_slices(array, cuts)
    shape, sizes, kept, block = plan
    gather(array, array, sizes, kept, block)
    # Kept data is now the array's first elements; realloc shrinks the buffer where it is. The
    # caller checked that no view or other holder exists, which is what refcheck would check.
    array.resize(shape, refcheck=False)
    return array


class BackgroundGather:
    """``compact_kept`` / ``kept_slices`` for many arrays on a helper thread, while the caller
    goes on.

    The gathers are memory-bound copies (a ViT-B moves ~400 MB through memory, ~35 ms on one
    core) and the rest of surgery is Python that never reads weight data (it rewrites shape
    constants and attributes): run together on two cores, the copies hide behind the Python
    work. All of them run in one compiled call that releases the GIL once (``gather_many``).
    Only arrays whose data no rule reads during surgery belong here: floating-point weights, not
    the integer shape constants that rules rewrite.

    Use: ``add`` every array before ``start``; ``finish`` takes the jobs still unclaimed on the
    calling thread, waits and returns the results in order. Arrays must not be touched between.
    """

    #: Smaller arrays are sliced at once: a thread costs ~0.1 ms, a 1 MiB copy about as much.
    MIN_BYTES = 1 << 20

    def __init__(self) -> None:
        self._results: list[np.ndarray] = []
        self._shrink: list[tuple[int, ...] | None] = []  # kept shape for arrays compacted in place
        self._jobs: list[tuple] = []
        self._claims = np.zeros(1, dtype=np.int64)  # next job to claim, shared by both threads
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._cores = available_cores()  # one core: a helper thread would only take turns

    def accepts(self, array: np.ndarray) -> bool:
        """Whether ``array`` is worth and safe to slice here (large, floating, contiguous)."""
        return (
            gather_many is not None
            and self._thread is None
            and self._cores > 1
            and array.nbytes >= self.MIN_BYTES
            and array.dtype.kind == "f"
            and array.flags.c_contiguous
        )

    def add(self, array: np.ndarray, cuts: Cuts, in_place: bool) -> None:
        """Queue ``array`` (accepted) for slicing: in its own buffer when ``in_place`` (it must
        be exclusively owned, see ``exclusively_owned``), else into a new array."""
        plan = _gather_plan(array, cuts)
        assert plan is not None and self.accepts(array)
        shape, sizes, kept, block = plan
        result = array if in_place else np.empty(shape, dtype=array.dtype)
        self._results.append(result)
        self._shrink.append(shape if in_place else None)
        self._jobs.append((array, result, sizes, kept, block))

    def start(self) -> None:
        """Begin copying (nothing to do without arrays, or when already started)."""
        if self._jobs and self._thread is None:
            # Largest first: the two threads that share the jobs end close together.
            self._jobs.sort(key=lambda job: -job[0].nbytes)
            self._thread = threading.Thread(target=self._run, name="sparsearch-gather")
            self._thread.start()

    def _run(self) -> None:
        try:
            gather_many(self._jobs, self._claims)
        except BaseException as error:  # re-raised by finish, in the caller's thread
            self._error = error

    def finish(self) -> list[np.ndarray]:
        """Help with the copies left, wait for the helper; the kept parts in ``add`` order.

        The caller takes jobs too once its own work is done (jobs go to whichever thread claims
        them first), so two cores share what the helper has not done yet.
        """
        if self._thread is not None:
            try:
                gather_many(self._jobs, self._claims)
            except BaseException as error:
                self._error = self._error or error
            self._thread.join()
        self._jobs.clear()  # the jobs hold references: resize needs the arrays alone
        if self._error is not None:
            raise self._error
        for array, shape in zip(self._results, self._shrink, strict=True):
            if shape is not None:
                array.resize(shape, refcheck=False)  # as in compact_kept: realloc where it is
        results, self._results, self._shrink = self._results, [], []
        return results


def exclusively_owned(array: np.ndarray, references: int) -> bool:
    """Whether ``array`` owns writable contiguous memory that nothing but the caller refers to.

    ``references`` is how many references the caller itself holds (its local names). A view of
    the array, or any other holder (a user's variable, a cache, another model sharing the
    tensor), adds one and makes compaction in place unsafe.
    """
    flags = array.flags
    usable = flags.owndata and flags.writeable and flags.c_contiguous
    del flags  # a flags object holds a reference to its array
    if not usable:
        return False
    return _reference_count(array) - _ONE_HOLDER + 1 <= references


def _reference_count(array: np.ndarray) -> int:
    return sys.getrefcount(array)


def _calibrate() -> int:
    # The count seen through the same call depth as in ``exclusively_owned`` for an array that one
    # local name holds: how arguments and stack slots count differs between Python versions.
    def through_parameter(array: np.ndarray) -> int:
        return _reference_count(array)

    held_once = np.empty(1)
    return through_parameter(held_once)


_ONE_HOLDER = _calibrate()


def _gather_plan(
    array: np.ndarray, cuts: Cuts
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[np.ndarray | None, ...], int] | None:
    """Output shape and the compiled gather's arguments (collapsed dims), or None for numpy."""
    if gather is None or not cuts or array.ndim == 0:
        return None
    by_axis = {axis: np.ascontiguousarray(positions, dtype=np.int64) for axis, positions in cuts}
    shape = tuple(
        len(by_axis[axis]) if axis in by_axis else size for axis, size in enumerate(array.shape)
    )
    innermost = max(by_axis)
    block = array.itemsize * math.prod(array.shape[innermost + 1 :])
    sizes: list[int] = []
    kept: list[np.ndarray | None] = []
    for axis in range(innermost + 1):
        if axis in by_axis:
            sizes.append(array.shape[axis])
            kept.append(by_axis[axis])
        elif kept and kept[-1] is None:
            sizes[-1] *= array.shape[axis]  # a run of uncut axes is one dim
        else:
            sizes.append(array.shape[axis])
            kept.append(None)
    return shape, tuple(sizes), tuple(kept), block


def _numpy_kept_slices(array: np.ndarray, cuts: Cuts) -> np.ndarray:
    # Cut the axis that drops the largest share first: later copies move less data.
    for axis, positions in sorted(cuts, key=lambda cut: len(cut[1]) / array.shape[cut[0]]):
        array = np.take(array, positions, axis=axis)
    return array
