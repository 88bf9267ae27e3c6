"""Latency measurement that ranks candidates honestly: fixed threads, warm-up, many repetitions,
median with spread and a noise flag, candidate and reference interleaved in one process.

Speed-ups are ratios measured side by side (per-round reference/candidate time), so a machine
that slows down during a run slows both. Backends (how a model is run) live in a registry; see
:class:`LatencyBackend` for the contract and ``workers.runtime.backends`` for the built-in ones.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

Feeds = Mapping[str, np.ndarray]
Runner = Callable[[Feeds], list[np.ndarray]]


class LatencyBackend(ABC):
    """How to run a model: load it once with a fixed thread count, then call it on inputs.

    Contract:
        * ``name`` is the registry key; ``accepts(model)`` says which model objects it runs
          (ONNX ``ModelProto`` by default).
        * ``load(model, threads)`` does all one-off work (sessions, weight packing) and returns a
          runner: ``runner(feeds) -> list of output arrays``, feeds keyed by graph input name.
        * The runner uses exactly ``threads`` threads and has no side effects that change the
          next call's speed (no caching of results).
        * Options (optimisation level, formats) are constructor arguments, stated explicitly.
        * ``unavailable_reason()`` names what this machine lacks (a GPU, an optional package);
          ``load`` then raises with that reason, and the shared backend tests skip.

    A complete minimal backend (NumPy evaluation of a single-MatMul model)::

        @register_backend("numpy-matmul")
        class NumpyMatMulBackend(LatencyBackend):
            def load(self, model, threads):
                weight = onnx.numpy_helper.to_array(model.graph.initializer[0])
                name = model.graph.input[0].name
                return lambda feeds: [feeds[name] @ weight]
    """

    name: ClassVar[str] = ""

    def accepts(self, model: Any) -> bool:
        """True when this backend can run ``model``."""
        import onnx

        return isinstance(model, onnx.ModelProto)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine (no GPU, say), or None when it can."""
        return None

    @abstractmethod
    def load(self, model: Any, threads: int) -> Runner:
        """Prepare ``model`` to run on ``threads`` threads; return the runner."""


_BACKENDS: dict[str, type[LatencyBackend]] = {}


def register_backend(name: str) -> Callable[[type[LatencyBackend]], type[LatencyBackend]]:
    """Class decorator adding a backend under ``name``; a duplicate name is an error."""

    def decorate(cls: type[LatencyBackend]) -> type[LatencyBackend]:
        if name in _BACKENDS:
            raise ValueError(f"latency backend {name!r} is already registered")
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return decorate


def list_backends() -> list[str]:
    """Names of the registered backends."""
    from workers.runtime import backends  # noqa: F401 - registers the built-in backends

    return sorted(_BACKENDS)


def get_backend(name: str, **options: Any) -> LatencyBackend:
    """An instance of the backend ``name`` built with ``options``."""
    if name not in list_backends():
        raise KeyError(f"unknown latency backend {name!r}; registered: {list_backends()}")
    return _BACKENDS[name](**options)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings of one runner, in milliseconds."""

    samples_ms: tuple[float, ...]
    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    noisy: bool

    @property
    def relative_spread(self) -> float:
        """IQR / median: a few percent on a quiet machine; above the noise threshold is noisy."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else 0.0


def summarize(samples_ms: Sequence[float], noise_threshold: float = 0.1) -> LatencyStats:
    """Median, p10/p90, IQR and a noise flag (IQR / median above the threshold, or < 5 samples).

    The flag uses the IQR rather than p10-p90: with tens of samples, one preempted run moves p90
    but not the quartiles, and a ranking should be distrusted only when the bulk of runs spread.
    """
    data = np.asarray(samples_ms, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no timing samples")
    p10, q25, median, q75, p90 = np.percentile(data, [10, 25, 50, 75, 90])
    spread = (q75 - q25) / median if median > 0 else 0.0
    return LatencyStats(
        samples_ms=tuple(float(v) for v in data),
        median_ms=float(median),
        p10_ms=float(p10),
        p90_ms=float(p90),
        iqr_ms=float(q75 - q25),
        noisy=bool(spread > noise_threshold or data.size < 5),
    )


def _time_once(runner: Runner, feeds: Feeds, burst: int = 1) -> float:
    """Milliseconds per call; with ``burst`` > 1, one untimed call first, then the mean of
    ``burst`` back-to-back calls."""
    if burst > 1:
        runner(feeds)
    start = time.perf_counter_ns()
    for _ in range(burst):
        runner(feeds)
    return (time.perf_counter_ns() - start) / 1e6 / burst


def measure_latency(
    runner: Runner, feeds: Feeds, warmup: int = 5, repeats: int = 30, noise_threshold: float = 0.1
) -> LatencyStats:
    """Time ``runner(feeds)``: ``warmup`` untimed calls, then ``repeats`` timed ones."""
    for _ in range(warmup):
        runner(feeds)
    return summarize([_time_once(runner, feeds) for _ in range(repeats)], noise_threshold)


@dataclass(frozen=True)
class LatencyComparison:
    """Candidate against reference, timed in alternating rounds in one process.

    Attributes:
        candidate, reference: per-runner statistics.
        speedup: median over rounds of reference time / candidate time (> 1: candidate faster).
        speedup_p10, speedup_p90: spread of the per-round ratio.
        max_abs_error, max_rel_error: largest output difference from the reference run
            (relative to the reference's largest magnitude); None when outputs were not compared.
        outputs_match: whether that error is within the tolerance (True when not compared).
        load_average: the 1-minute system load when measuring finished (compare to the cores).
        noisy: either runner noisy, the ratio's IQR / median above the threshold, or the machine
            loaded (1-minute load average above the core count).
    """

    candidate: LatencyStats
    reference: LatencyStats
    speedup: float
    speedup_p10: float
    speedup_p90: float
    max_abs_error: float | None
    max_rel_error: float | None
    outputs_match: bool
    load_average: float
    noisy: bool


def output_error(
    actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]
) -> tuple[float, float]:
    """(max absolute error, max error relative to each expected output's largest magnitude)."""
    if len(actual) != len(expected):
        raise ValueError(f"{len(actual)} outputs against {len(expected)} reference outputs")
    worst_abs = worst_rel = 0.0
    for got, want in zip(actual, expected, strict=True):
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            raise ValueError(f"output shape {got.shape} differs from reference {want.shape}")
        error = float(np.abs(got - want).max()) if got.size else 0.0
        scale = float(np.abs(want).max()) if want.size else 0.0
        worst_abs = max(worst_abs, error)
        worst_rel = max(worst_rel, error / scale if scale > 0 else error)
    return worst_abs, worst_rel


def compare_latency(
    candidate: Runner,
    reference: Runner,
    feeds: Feeds,
    warmup: int = 5,
    repeats: int = 30,
    check_outputs: bool = True,
    rtol: float = 1e-4,
    noise_threshold: float = 0.1,
    burst: int = 1,
) -> LatencyComparison:
    """Time candidate and reference in alternating rounds (order flipped every round).

    With ``burst`` = 1 each round times one call of each: what a caller that runs the layer or
    model now and then sees, starting from caches the other runner left. With ``burst`` > 1
    each runner first makes one untimed call and then times ``burst`` back-to-back calls: the
    steady state of a serving loop or of consecutive layers, where a multi-threaded runner finds
    its threads awake and its share of the data in its own cores' caches (one call of a
    1-thread runner leaves the data in the calling core's cache, so a single 2-thread call after
    it measures the other core fetching everything: measured 1.1-1.3x where the steady state
    gives 1.6-1.9x on 1x1-convolution shapes, bench/results/runtime_lead_epyc_2cores_session4.md).

    Args:
        candidate, reference: runners from :meth:`LatencyBackend.load`.
        feeds: the same inputs for both.
        warmup: untimed rounds first (each runs both).
        repeats: timed rounds.
        check_outputs: compare the candidate's outputs with the reference's (set False when the
            candidate computes something else on purpose, e.g. a pruned model).
        rtol: tolerance on the relative output error.
        noise_threshold: relative p10-p90 spread above which a result is flagged noisy.
        burst: back-to-back calls per timed sample (see above); samples are per call.
    """
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst}")
    for _ in range(warmup):
        reference(feeds)
        candidate(feeds)
    cand_ms, ref_ms = [], []
    for round_index in range(repeats):
        if round_index % 2:
            cand_ms.append(_time_once(candidate, feeds, burst))
            ref_ms.append(_time_once(reference, feeds, burst))
        else:
            ref_ms.append(_time_once(reference, feeds, burst))
            cand_ms.append(_time_once(candidate, feeds, burst))
    ratios = np.asarray(ref_ms) / np.maximum(np.asarray(cand_ms), 1e-9)
    abs_error = rel_error = None
    matches = True
    if check_outputs:
        abs_error, rel_error = output_error(candidate(feeds), reference(feeds))
        matches = rel_error <= rtol
    cand_stats = summarize(cand_ms, noise_threshold)
    ref_stats = summarize(ref_ms, noise_threshold)
    p10, q25, median, q75, p90 = np.percentile(ratios, [10, 25, 50, 75, 90])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = load > (os.cpu_count() or 1)
    return LatencyComparison(
        candidate=cand_stats,
        reference=ref_stats,
        speedup=float(median),
        speedup_p10=float(p10),
        speedup_p90=float(p90),
        max_abs_error=abs_error,
        max_rel_error=rel_error,
        outputs_match=matches,
        load_average=float(load),
        noisy=cand_stats.noisy or ref_stats.noisy or (q75 - q25) / median > noise_threshold or busy,
    )


def compare_models(
    candidate_model: Any,
    reference_model: Any,
    feeds: Feeds,
    threads: int = 1,
    candidate_backend: str = "sparse",
    reference_backend: str = "onnxruntime",
    **options: Any,
) -> LatencyComparison:
    """Load both models with their backends on ``threads`` threads and compare them.

    Extra keyword arguments go to :func:`compare_latency` (warmup, repeats, check_outputs, ...).
    """
    candidate = get_backend(candidate_backend).load(candidate_model, threads)
    reference = get_backend(reference_backend).load(reference_model, threads)
    return compare_latency(candidate, reference, feeds, **options)
