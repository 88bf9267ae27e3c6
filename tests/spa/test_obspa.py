"""OBSPA: the repair is the least-squares optimum, greedy scores spot redundant channels, and the
data-free compensation brings a pruned network closer to the dense one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnx_ir as ir
import torch

from onnx_graph.testing import randomize_module, run_onnx
from spa.consumers import find_consumers
from spa.criteria.obspa import _greedy_scores, _repair
from spa.pipeline import prune_model
from spa.torch_bridge import lower_with_batchnorm
from tests.spa.conftest import TinyNet


def _gemm_model(weight: np.ndarray, bias: np.ndarray) -> ir.Model:
    rows, inputs = weight.shape
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", inputs])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", rows])],
        [
            onnx.numpy_helper.from_array(weight.astype(np.float32), "w"),
            onnx.numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    return ir.from_proto(
        onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    )


def test_repair_is_the_least_squares_solution() -> None:
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(6, 6))
    x = (rng.normal(size=(4000, 6)) @ mixing + rng.normal(size=6)).astype(np.float64)
    weight, bias = rng.normal(size=(4, 6)), rng.normal(size=4)
    model = _gemm_model(weight, bias)
    keep, remove = np.array([0, 2, 3, 5]), np.array([1, 4])
    mean, cov = x.mean(axis=0), np.cov(x.T, bias=True)
    (consumer,) = find_consumers(model)
    _repair(consumer, keep, mean, cov)
    repaired_weight = model.graph.initializers["w"].const_value.numpy().astype(np.float64)
    repaired_bias = model.graph.initializers["b"].const_value.numpy().astype(np.float64)
    assert np.all(repaired_weight[:, remove] == 0)
    target = x @ weight.T + bias
    design = np.hstack([x[:, keep], np.ones((len(x), 1))])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    np.testing.assert_allclose(repaired_weight[:, keep], solution[:-1].T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(repaired_bias, solution[-1], rtol=1e-4, atol=1e-4)
    naive_error = np.mean((x[:, keep] @ weight[:, keep].T + bias - target) ** 2)
    repaired_error = np.mean((x @ repaired_weight.T + repaired_bias - target) ** 2)
    assert repaired_error < 0.5 * naive_error


def test_greedy_scores_remove_one_of_two_duplicate_channels_first() -> None:
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(5000, 5))
    x = np.hstack(
        [basis, basis[:, [1]] + 1e-3 * rng.normal(size=(5000, 1))]
    )  # channel 5 ~ channel 1
    cov = np.cov(x.T) + 1e-4 * np.eye(6)
    weight = rng.normal(size=(8, 6))
    member = SimpleNamespace(positions=np.arange(6), channel_index=np.arange(6))
    scores = _greedy_scores(6, [(weight, np.linalg.inv(cov), member)])
    order = np.argsort(scores)
    assert order[0] in (1, 5)
    assert order[1] not in (1, 5)  # once one copy is gone the other carries the signal alone
    assert scores[order[0]] < 1e-2 * scores[order[1]]


def test_compensation_brings_the_pruned_network_closer_to_the_dense_one() -> None:
    torch.manual_seed(0)
    module = randomize_module(TinyNet(), seed=5)
    x = torch.randn(256, 3, 8, 8)
    for norm in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: true statistics of this input distribution
    module.train()
    with torch.no_grad():
        module(x)
    module.eval()
    model = lower_with_batchnorm(module, (x[:2],))
    dense = run_onnx(model, x.numpy())[0]
    result = prune_model(model, criterion="obspa", ratio=0.25)
    from spa import prune

    compensated = run_onnx(result.pruned, x.numpy())[0]
    uncompensated = run_onnx(prune(model, result.plan), x.numpy())[0]
    error_with = float(np.mean((compensated - dense) ** 2))
    error_without = float(np.mean((uncompensated - dense) ** 2))
    assert error_with < 0.8 * error_without
