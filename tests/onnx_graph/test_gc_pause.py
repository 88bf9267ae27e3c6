"""The cyclic collector is paused inside graph passes and restored exactly as it was."""

from __future__ import annotations

import gc

import pytest

from onnx_graph.gc_pause import without_gc


@without_gc
def _state(fail: bool = False) -> bool:
    if fail:
        raise RuntimeError("inside")
    return gc.isenabled()


def test_collector_is_paused_inside_and_restored_after() -> None:
    assert gc.isenabled()
    assert _state() is False
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="inside"):
        _state(fail=True)
    assert gc.isenabled()


def test_a_collector_disabled_by_the_caller_stays_disabled() -> None:
    gc.disable()
    try:
        assert _state() is False
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_graph_passes_are_wrapped() -> None:
    from onnx_graph import analyze, prune
    from spa.allocation import score_groups

    for function in (analyze, prune, score_groups):
        assert function.__wrapped__ is not None  # type: ignore[attr-defined]
