"""Values of the simple criteria against hand computations on the tiny network."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from spa import get_criterion
from spa.torch_bridge import (
    load_onnx_weights,
    onnx_gradients,
    parameter_sources,
    store_module_weights,
)
from tests.spa.conftest import TinyCase


def _group_of(case: TinyCase, name: str, axis: int = 0):
    return next(
        g
        for g in case.groups.prunable
        if any(m.value_name == name and m.axis == axis for m in g.parameters)
    )


def test_batchnorm_scale_is_the_normalised_absolute_gamma(tiny_case: TinyCase) -> None:
    group = _group_of(tiny_case, "bn3.weight")
    gamma = np.abs(tiny_case.module.bn3.weight.detach().numpy().astype(np.float64))
    scores = get_criterion("bn_scale").score(tiny_case.model, group)
    bn_members = [
        m
        for m in group.parameters
        if m.value_name.startswith("bn") and m.value_name.endswith("weight")
    ]
    if len(bn_members) == 1:
        np.testing.assert_allclose(scores, gamma / gamma.mean(), rtol=1e-6)
    else:  # bn3 and bn4 share the depthwise group
        gamma4 = np.abs(tiny_case.module.bn4.weight.detach().numpy().astype(np.float64))
        np.testing.assert_allclose(scores, gamma / gamma.mean() + gamma4 / gamma4.mean(), rtol=1e-6)


@pytest.mark.parametrize(
    ("reduction", "combine"), [("sum", np.sum), ("mean", np.mean), ("max", np.max)]
)
def test_magnitude_reductions_combine_normalised_members(
    tiny_case: TinyCase, reduction: str, combine
) -> None:
    group = _group_of(tiny_case, "fc1.weight")
    rows = []
    for member in group.parameters:
        array = (
            tiny_case.model.graph.initializers[member.value_name]
            .const_value.numpy()
            .astype(np.float64)
        )
        norms = (
            np.abs(np.moveaxis(array, member.axis, 0))
            .reshape(array.shape[member.axis], -1)
            .sum(axis=1)
        )
        rows.append(norms / norms.mean())
    expected = combine(np.stack(rows), axis=0)
    np.testing.assert_allclose(
        get_criterion("l1", reduction=reduction).score(tiny_case.model, group), expected
    )
    with pytest.raises(ValueError, match="reduction"):
        get_criterion("l1", reduction="median")


def test_taylor_is_the_absolute_weight_gradient_product(tiny_case: TinyCase) -> None:
    module = tiny_case.module
    x, y = torch.from_numpy(tiny_case.x), torch.from_numpy(tiny_case.y)
    module.zero_grad()
    torch.nn.functional.cross_entropy(module(x), y).backward()
    expected = np.zeros(16)
    for name in ("fc1.weight", "fc1.bias"):
        parameter = dict(module.named_parameters())[name]
        product = (parameter * parameter.grad).detach().numpy().astype(np.float64)
        expected += product.reshape(16, -1).sum(axis=1)
    for name in ("fc2.weight",):
        parameter = dict(module.named_parameters())[name]
        expected += (parameter * parameter.grad).detach().numpy().astype(np.float64).sum(axis=0)
    module.zero_grad()
    group = _group_of(tiny_case, "fc1.weight")
    criterion = get_criterion(
        "taylor", module=module, data=(tiny_case.x, tiny_case.y), batch_size=64
    )
    np.testing.assert_allclose(
        criterion.score(tiny_case.model, group), np.abs(expected), rtol=1e-4, atol=1e-9
    )
    with pytest.raises(ValueError, match="module="):
        get_criterion("taylor")


def test_random_is_seeded() -> None:
    from types import SimpleNamespace

    group = SimpleNamespace(num_channels=20)
    first = get_criterion("random", seed=1).score(None, group)  # type: ignore[arg-type]
    again = get_criterion("random", seed=1).score(None, group)  # type: ignore[arg-type]
    other = get_criterion("random", seed=2).score(None, group)  # type: ignore[arg-type]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_torch_bridge_round_trips_weights_and_gradients(tiny_case: TinyCase) -> None:
    sources = parameter_sources(tiny_case.model, tiny_case.module)
    assert sources["conv1.weight"] == ("conv1.weight", None)
    assert {"bn1.running_mean", "fc1.weight", "project.bias"} <= set(sources)
    original = {k: v.detach().clone() for k, v in tiny_case.module.state_dict().items()}
    try:
        with torch.no_grad():
            tiny_case.module.fc1.weight.mul_(2.0)
        stored = store_module_weights(tiny_case.model, tiny_case.module)
        np.testing.assert_allclose(
            stored.graph.initializers["fc1.weight"].const_value.numpy(),
            original["fc1.weight"].numpy() * 2.0,
            rtol=1e-6,
        )
        loaded = load_onnx_weights(tiny_case.model, tiny_case.module)
        assert "fc1.weight" in loaded
        np.testing.assert_allclose(
            tiny_case.module.fc1.weight.detach().numpy(), original["fc1.weight"].numpy()
        )
        gradients = onnx_gradients(
            tiny_case.model,
            tiny_case.module,
            [(torch.from_numpy(tiny_case.x), torch.from_numpy(tiny_case.y))],
        )
        assert (
            gradients["conv1.weight"].shape == (8, 3, 3, 3)
            and np.abs(gradients["conv1.weight"]).sum() > 0
        )
    finally:
        tiny_case.module.load_state_dict(original)


def test_magnitude_ignores_batchnorm_running_statistics(tiny_case: TinyCase) -> None:
    group = _group_of(tiny_case, "conv1.weight")
    criterion = get_criterion("l2")
    before = criterion.score(tiny_case.model, group)
    changed = tiny_case.model.clone()
    variance = changed.graph.initializers["bn1.running_var"]
    variance.const_value = ir.Tensor(
        variance.const_value.numpy() * np.arange(1, 9, dtype=np.float32)
    )
    np.testing.assert_allclose(criterion.score(changed, group), before)
    weight = changed.graph.initializers["bn1.weight"]
    weight.const_value = ir.Tensor(weight.const_value.numpy() * np.arange(1, 9, dtype=np.float32))
    assert not np.allclose(criterion.score(changed, group), before)
