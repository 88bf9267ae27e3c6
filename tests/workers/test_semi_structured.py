"""Which layers run on 2:4 sparse tensor cores, the 2:4 magnitude pruning, and the pointwise-conv
stand-in; all of it checked on CPU (the conversion itself is in test_cuda_runner.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.runtime.latency import get_backend
from workers.runtime.nm_sparsity import is_nm
from workers.runtime.semi_structured import (
    PointwiseLinear,
    apply_two_four,
    convert_semi_structured,
    is_pointwise_conv,
    plan_semi_structured,
)


class _Mixed(torch.nn.Module):
    """One layer of every kind the plan tells apart."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.pointwise = torch.nn.Conv2d(32, 64, 1)
        self.strided = torch.nn.Conv2d(64, 64, 1, stride=2)
        self.depthwise = torch.nn.Conv2d(64, 64, 1, groups=64)
        self.odd = torch.nn.Linear(64, 24)
        self.head = torch.nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.strided(self.pointwise(self.stem(x))) + self.depthwise(torch.zeros(1))
        return self.head(x.mean((2, 3))) + self.odd(x.mean((2, 3))).sum()


def test_plan_names_each_dense_reason_and_converts_only_2_4_layers() -> None:
    torch.manual_seed(0)
    module = _Mixed()
    before = plan_semi_structured(module)
    assert before.converted == ()
    assert "not 2:4" in before.dense["pointwise"] and "not 2:4" in before.dense["head"]
    assert "(3, 3) kernel" in before.dense["stem"]
    assert "stride (2, 2)" in before.dense["strided"]
    assert "64 group(s)" in before.dense["depthwise"]
    assert "24x64" in before.dense["odd"] and "multiple of 16" in before.dense["odd"]

    pruned = apply_two_four(module)
    assert pruned == ["pointwise", "head"]
    after = plan_semi_structured(module)
    assert after.converted == ("pointwise", "head")
    assert set(after.dense) == {"stem", "strided", "depthwise", "odd"}
    assert not is_nm(module.odd.weight.detach().numpy(), 2, 4)  # left as it was


def test_attention_projections_stay_dense_because_attention_bypasses_their_forward() -> None:
    layer = torch.nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True)
    assert apply_two_four(layer) == ["linear1", "linear2"]
    plan = plan_semi_structured(layer)
    assert plan.converted == ("linear1", "linear2")
    assert "out_proj.weight" in plan.dense["self_attn.out_proj"]


def test_a_layer_that_is_the_whole_module() -> None:
    linear = torch.nn.Linear(32, 16)
    assert apply_two_four(linear) == [""]
    assert plan_semi_structured(linear).converted == ("",)
    conv = torch.nn.Conv2d(32, 16, 1)
    assert apply_two_four(conv) == []
    assert "whole module" in plan_semi_structured(conv).dense[""]
    assert not is_nm(conv.weight.detach().reshape(16, 32).numpy(), 2, 4)


def test_apply_two_four_keeps_the_two_largest_of_every_four_inputs() -> None:
    layer = torch.nn.Linear(16, 16, bias=False)
    with torch.no_grad():
        row = torch.tensor([0.1, -3.0, 2.0, 0.5] * 4)
        layer.weight.copy_(row.expand(16, 16))
    apply_two_four(layer)
    kept = layer.weight.detach().numpy()
    np.testing.assert_array_equal(kept[0, :4], [0.0, -3.0, 2.0, 0.0])
    assert np.count_nonzero(kept) == 16 * 8 and is_nm(kept, 2, 4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_linear_equals_the_conv(channels_last: bool) -> None:
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(32, 48, 1)
    assert is_pointwise_conv(conv) and not is_pointwise_conv(torch.nn.Conv2d(32, 48, 1, padding=1))
    x = torch.randn(2, 32, 7, 5)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = conv(x)
        got = PointwiseLinear(conv)(x)
    assert got.shape == (2, 48, 7, 5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_conversion_and_backend_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="CUDA device"):
        convert_semi_structured(torch.nn.Linear(16, 16))
    with pytest.raises(ValueError, match="semi_structured needs dtype float16 or bfloat16"):
        get_backend("torch-cuda", semi_structured=True)
    with pytest.raises(ValueError, match="dtype must be one of"):
        get_backend("torch-cuda", dtype="float64")
