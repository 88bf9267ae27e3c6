"""Latency measurement: statistics, noise flag, interleaved comparison, and one shared suite that
every registered backend must pass."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import onnx
import pytest

from workers.runtime.latency import (
    LatencyBackend,
    compare_latency,
    compare_models,
    get_backend,
    list_backends,
    measure_latency,
    output_error,
    register_backend,
    summarize,
)


@pytest.fixture(scope="module")
def tiny_model():
    """A sparse torch MLP, its ONNX export, an input, and the expected output."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    ).eval()
    with torch.no_grad():
        for layer in (module[0], module[2]):
            layer.weight.mul_(torch.rand_like(layer.weight) > 0.8)
    x = torch.randn(16, 32)
    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=False, input_names=["x"], output_names=["y"])
    with torch.no_grad():
        expected = module(x).numpy()
    return module, onnx.load_from_string(buffer.getvalue()), {"x": x.numpy()}, expected


@pytest.mark.parametrize("backend_name", list_backends())
def test_every_backend_runs_and_measures(backend_name: str, tiny_model) -> None:
    module, model, feeds, expected = tiny_model
    backend = get_backend(backend_name)
    reason = backend.unavailable_reason()
    if reason is not None:
        with pytest.raises(RuntimeError, match=re.escape(reason)):
            backend.load(module, 1)
        pytest.skip(f"{backend_name} {reason}")
    candidate = model if backend.accepts(model) else module
    assert backend.accepts(candidate), f"{backend_name} accepts neither ONNX nor torch"
    for threads in (1, 2):
        runner = backend.load(candidate, threads)
        outputs = runner(feeds)
        np.testing.assert_allclose(outputs[0], expected, rtol=1e-4, atol=1e-5)
        stats = measure_latency(runner, feeds, warmup=2, repeats=12)
        assert len(stats.samples_ms) == 12 and min(stats.samples_ms) > 0
        assert stats.p10_ms <= stats.median_ms <= stats.p90_ms
        assert stats.iqr_ms >= 0 and stats.relative_spread >= 0


def test_summarize_flags_noise() -> None:
    quiet = summarize([10.0, 10.1, 9.9, 10.0, 10.05, 9.95, 10.0, 10.02])
    assert quiet.median_ms == pytest.approx(10.0) and not quiet.noisy
    noisy = summarize([10.0, 14.0, 9.0, 20.0, 10.0, 13.0, 30.0, 10.0])
    assert noisy.noisy and noisy.relative_spread > 0.1
    assert summarize([1.0, 1.0, 1.0]).noisy  # too few samples to trust
    with pytest.raises(ValueError):
        summarize([])


def test_compare_interleaves_and_checks_outputs(tiny_model) -> None:
    _, model, feeds, _ = tiny_model
    calls: list[str] = []
    reference = get_backend("onnxruntime").load(model, 1)

    def slow(feeds_):
        calls.append("candidate")
        return [reference(feeds_)[0] + 1.0]

    def ref(feeds_):
        calls.append("reference")
        return reference(feeds_)

    result = compare_latency(slow, ref, feeds, warmup=1, repeats=4)
    # warm-up pair, then rounds with the order flipped each time, then one output check each
    assert calls[2:10] == ["reference", "candidate", "candidate", "reference"] * 2
    assert not result.outputs_match and result.max_abs_error == pytest.approx(1.0, rel=1e-5)
    assert result.speedup_p10 <= result.speedup <= result.speedup_p90
    unchecked = compare_latency(slow, ref, feeds, warmup=0, repeats=3, check_outputs=False)
    assert unchecked.outputs_match and unchecked.max_rel_error is None


def test_burst_rounds_run_back_to_back_after_one_untimed_call() -> None:
    calls: list[str] = []
    feeds = {"x": np.zeros(1, dtype=np.float32)}

    def runner(name: str, seconds: float):
        def run(_feeds):
            calls.append(name)
            time.sleep(seconds)
            return [np.zeros(1, dtype=np.float32)]

        return run

    result = compare_latency(
        runner("c", 0.002), runner("r", 0.004), feeds, warmup=0, repeats=2, burst=3
    )
    # round 0: reference first, each runner 1 untimed + 3 timed calls; round 1 flipped
    assert calls[:16] == ["r"] * 4 + ["c"] * 4 + ["c"] * 4 + ["r"] * 4
    # samples are per call, not per burst
    assert 2.0 <= result.candidate.median_ms < 4.0  # a whole burst would be 6 ms
    assert 4.0 <= result.reference.median_ms < 8.0
    assert 1.3 < result.speedup < 2.5
    with pytest.raises(ValueError, match="burst must be at least 1"):
        compare_latency(runner("c", 0), runner("r", 0), feeds, burst=0)


def test_sparse_against_onnxruntime_matches(tiny_model) -> None:
    _, model, feeds, _ = tiny_model
    result = compare_models(model, model, feeds, threads=2, warmup=1, repeats=5)
    assert result.outputs_match and result.max_rel_error is not None
    assert result.max_rel_error <= 1e-4 and result.speedup > 0


def test_output_error_and_registry_rules() -> None:
    abs_err, rel_err = output_error([np.array([1.0, 2.0])], [np.array([1.0, 4.0])])
    assert abs_err == 2.0 and rel_err == 0.5
    with pytest.raises(ValueError):
        output_error([np.zeros(2)], [np.zeros(3)])
    with pytest.raises(ValueError):

        @register_backend("onnxruntime")
        class Duplicate(LatencyBackend):
            def load(self, model, threads):
                raise NotImplementedError

    with pytest.raises(KeyError):
        get_backend("no-such-backend")


def test_package_exports_resolve() -> None:
    import workers
    import workers.runtime

    for name in workers.__all__:
        assert getattr(workers, name) is not None
    for name in workers.runtime.__all__:
        assert getattr(workers.runtime, name) is not None
