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


def test_analysis_scoring_and_surgery_run_with_the_collector_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnx.parser
    import onnx_ir as ir

    import onnx_graph.analysis as analysis
    import onnx_graph.surgery as surgery
    import spa.allocation as allocation
    from onnx_graph import analyze, prune
    from spa.allocation import plan_uniform

    seen: dict[str, bool] = {}

    def spy(module: object, name: str) -> None:
        original = getattr(module, name)

        def recording(*args: object, **kwargs: object) -> object:
            seen[name] = gc.isenabled()
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, recording)

    spy(analysis, "build_groups")
    spy(allocation, "eligible_groups")
    spy(surgery, "_drop_unused_initializers")
    model = ir.from_proto(
        onnx.parser.parse_model(
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[1, 4] x) => (float[1, 3] y) {
              w1 = Constant<value = float[6, 4] {1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9,1,2,3,4,5,6}>()
              h = Gemm<transB = 1>(x, w1)
              w2 = Constant<value = float[3, 6] {1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9}>()
              y = Gemm<transB = 1>(h, w2)
            }
            """
        )
    )
    groups = analyze(model)
    prune(model, plan_uniform(model, groups, 0.5, criterion="l1"))
    assert seen == {"build_groups": False, "eligible_groups": False,
                    "_drop_unused_initializers": False}  # fmt: skip
    assert gc.isenabled()
