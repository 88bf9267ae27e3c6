"""Lowering from PyTorch (dynamo and legacy exporters) and loading ONNX files, bad files included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from onnx_graph import ModelLoadError, PruningPlan, analyze, load, lower, save  # noqa: E402
from onnx_graph.testing import oracle_difference, randomize_module, run_onnx  # noqa: E402


class TwinBranches(torch.nn.Module):
    """Two convs whose biases are identical zeros: the legacy exporter shares one initializer."""

    def __init__(self) -> None:
        super().__init__()
        self.left = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.right = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], 1))


def _twin_module() -> TwinBranches:
    module = randomize_module(TwinBranches(), seed=3)
    with torch.no_grad():
        module.left.bias.zero_()
        module.right.bias.zero_()
    return module.eval()


def test_dynamo_lowering_keeps_parameter_names_and_dynamic_batch() -> None:
    model = lower(_twin_module(), (torch.randn(1, 3, 8, 8),), dynamic_batch=True)
    assert {"left.weight", "right.weight", "head.weight"} <= set(model.graph.initializers)
    batch = model.graph.inputs[0].shape[0]
    assert not isinstance(batch, int)
    outputs = run_onnx(model, np.zeros((3, 3, 8, 8), np.float32))
    assert outputs[0].shape == (3, 4, 8, 8)


def test_legacy_shared_zero_bias_is_not_sliced_for_one_user() -> None:
    model = lower(_twin_module(), (torch.randn(1, 3, 8, 8),), dynamo=False)
    # The legacy exporter deduplicates the two identical zero biases: one aliases the other.
    right_bias = [n for n in model.graph if n.op_type == "Conv"][1].inputs[2]
    assert right_bias.producer() is not None and right_bias.producer().op_type == "Identity"
    groups = analyze(model)
    branch_groups = [g for g in groups.prunable if g.num_channels == 8]
    assert len(branch_groups) == 2, "the two branches must stay independent groups"
    plan = PruningPlan(
        groups, {branch_groups[0].id: np.array([0, 1, 2]), branch_groups[1].id: np.array([5])}
    )
    inputs = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    difference, scale = oracle_difference(model, plan, inputs)
    assert difference <= 1e-4 * scale
    biases = [n.inputs[2] for n in model.graph if n.op_type == "Conv"][:2]
    assert biases[0] is not biases[1]


def test_shared_non_uniform_weight_couples_its_users() -> None:
    model = lower(_twin_module(), (torch.randn(1, 3, 8, 8),))
    convs = [n for n in model.graph if n.op_type == "Conv"]
    convs[1].replace_input_with(1, convs[0].inputs[1])  # a tied weight: one tensor, two users
    groups = analyze(model)
    tied = [g for g in groups if any(m.value_name == convs[0].inputs[1].name for m in g.members)]
    assert len(tied) == 1 and tied[0].num_channels == 8
    plan = PruningPlan(groups, {tied[0].id: np.array([1, 4])})
    inputs = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    difference, scale = oracle_difference(model, plan, inputs)
    assert difference <= 1e-4 * scale


def test_load_round_trip_with_external_data(tmp_path: Path) -> None:
    model = lower(_twin_module(), (torch.randn(1, 3, 8, 8),))
    path = tmp_path / "twin.onnx"
    save(model, path, external_data=True)
    assert (tmp_path / "twin.onnx.data").exists()
    loaded = load(path)
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(run_onnx(loaded, x)[0], run_onnx(model, x)[0], rtol=1e-6)


def test_load_turns_embedded_weights_into_arrays_once(tmp_path: Path) -> None:
    import onnx_ir as ir

    model = lower(_twin_module(), (torch.randn(1, 3, 8, 8),))
    path = tmp_path / "twin.onnx"
    save(model, path)
    loaded = load(path)
    reference = onnx.load(path)
    expected = {t.name: onnx.numpy_helper.to_array(t) for t in reference.graph.initializer}
    assert set(expected) == set(loaded.graph.initializers)
    for name, value in loaded.graph.initializers.items():
        assert not isinstance(value.const_value, ir.TensorProtoTensor), name
        np.testing.assert_array_equal(value.const_value.numpy(), expected[name])


def test_load_keeps_external_weights_lazy(tmp_path: Path) -> None:
    import onnx_ir as ir

    model = lower(_twin_module(), (torch.randn(1, 3, 8, 8),))
    path = tmp_path / "twin.onnx"
    save(model, path, external_data=True)
    loaded = load(path)
    external = [
        v
        for v in loaded.graph.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    ]
    assert external  # weights in the side file are not read at load time


def test_load_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load(tmp_path / "absent.onnx")


def test_load_reports_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"\x00\xffthis is not a protobuf\x12\x99")
    with pytest.raises(ModelLoadError, match="notes.onnx"):
        load(path)


def test_load_reports_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="directory"):
        load(tmp_path)


def test_saved_model_passes_the_checker(tmp_path: Path) -> None:
    model = lower(_twin_module(), (torch.randn(1, 3, 8, 8),))
    save(model, tmp_path / "m.onnx")
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)


def test_lowered_weights_do_not_alias_the_module() -> None:
    module = _twin_module()
    model = lower(module, (torch.randn(1, 3, 8, 8),))
    before = model.graph.initializers["left.weight"].const_value.numpy().copy()
    with torch.no_grad():
        module.left.weight.add_(1.0)
    np.testing.assert_array_equal(
        model.graph.initializers["left.weight"].const_value.numpy(), before
    )
