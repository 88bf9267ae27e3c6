"""Mapping ONNX groups onto module parameters: folded BatchNorm, transposed MatMul weights, coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnx_graph.plan import PruningPlan
from onnx_graph.surgery import zero_out
from onnx_graph.testing import run_onnx
from spa.channel_layout import ChannelLayout
from tests.spa.tiny_models import TINY_MODELS, tiny_mapped


def _slices_by_name(mapping):
    found = {}
    for group in mapping.mapped:
        for item in group.slices:
            found[(item.name, item.axis)] = (group.group_id, item)
    return found


def test_resnet_maps_folded_batchnorm_and_residual_coupling():
    model, x, mapping = tiny_mapped("resnet")
    found = _slices_by_name(mapping)
    # the stem conv, the residual block's output and the next block's inputs are one group
    stem_group = found[("stem.0.weight", 0)][0]
    assert found[("layer1.second.0.weight", 0)][0] == stem_group
    assert found[("layer1.first.0.weight", 1)][0] == stem_group
    # BN parameters and statistics disappear from the export but map with their conv's channels
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 8
    for bn in norms:
        conv = bn[: -len("1")] + "0"
        group_id, conv_slice = found[(f"{conv}.weight", 0)]
        for suffix, is_buffer in (
            ("weight", False),
            ("bias", False),
            ("running_mean", True),
            ("running_var", True),
        ):
            bn_group, bn_slice = found[(f"{bn}.{suffix}", 0)]
            assert bn_group == group_id and bn_slice.is_buffer == is_buffer
            np.testing.assert_array_equal(bn_slice.positions, conv_slice.positions)
    # two residual groups and the inner channels of the three blocks
    assert len(mapping.mapped) == 5 and not mapping.skipped


def test_mobilenet_depthwise_shares_group_with_producer():
    model, x, mapping = tiny_mapped("mobilenet")
    found = _slices_by_name(mapping)
    # features.3 is the first depthwise conv: its filters are the stem's channels
    assert found[("features.2.0.weight", 0)][0] == found[("features.0.0.weight", 0)][0]
    assert found[("features.4.0.weight", 1)][0] == found[("features.0.0.weight", 0)][0]
    assert mapping.num_channels == 4 + 8 + 16 + 16  # stem and three pointwise convs


def test_linear_on_3d_input_maps_transposed_weight():
    model, x, mapping = tiny_mapped("mlp3d")
    found = _slices_by_name(mapping)
    group_id, fc1 = found[("fc1.weight", 0)]
    assert found[("fc1.bias", 0)][0] == group_id and found[("fc2.weight", 1)][0] == group_id
    onnx_names = [m.value_name for m in mapping.groups[group_id].parameters]
    assert "fc1.weight" not in onnx_names  # the export renamed it: matched by value, transposed
    assert found[("head.weight", 0)][0] == found[("out.weight", 1)][0]
    assert fc1.positions.tolist() == list(range(8))


@pytest.mark.parametrize("name", TINY_MODELS)
def test_zeroing_mapped_channels_equals_onnx_zero_out(name):
    """The mapping covers every initializer of a group: zeroing the module's slices of a channel
    has exactly the effect of the ONNX oracle's zero_out of that channel."""
    model, x, mapping = tiny_mapped(name)
    layout = ChannelLayout(model, mapping)
    rng = np.random.default_rng(1)
    plan = PruningPlan(mapping.groups)
    mask = torch.zeros(layout.num_channels, dtype=torch.bool)
    for index, group in enumerate(mapping.mapped):
        channels = np.sort(rng.choice(group.num_channels, group.num_channels // 2, replace=False))
        plan.removed[group.group_id] = channels
        mask[layout.group_channels(index)][torch.as_tensor(channels)] = True
    expected = run_onnx(zero_out(mapping.model, plan), x.numpy())[0]
    layout.zero_(mask)
    model.eval()
    with torch.no_grad():
        actual = model(x).numpy()
    assert mask.sum() > 0
    np.testing.assert_allclose(actual, expected, atol=1e-5 * max(1.0, np.abs(expected).max()))
