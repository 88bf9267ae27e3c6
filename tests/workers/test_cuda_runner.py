"""The torch-cuda latency backend on a GPU: graph replay equals the CPU module, 2:4 layers run on
cuSPARSELt, new shapes and new arrays are seen, the caller's module is left alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from workers.runtime.latency import compare_latency, get_backend
from workers.runtime.semi_structured import apply_two_four, plan_semi_structured

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off, so float32 on the GPU is comparable with the CPU to 1e-4."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 32),
    ).eval()
    with torch.no_grad():
        module[1].running_mean.uniform_(-0.5, 0.5)
        module[1].running_var.uniform_(0.5, 2.0)
    return module


def _cpu(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_float32_equals_the_cpu_module_and_leaves_it_alone(cuda_graph: bool) -> None:
    module = _small_cnn()
    saved = {k: v.clone() for k, v in module.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    runner = get_backend("torch-cuda", cuda_graph=cuda_graph).load(module, 1)
    assert _relative(runner({"x": x})[0], _cpu(module, x)) < 1e-5
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in module.parameters())
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)


def test_new_shapes_recapture_and_resident_inputs_follow_array_objects() -> None:
    module = _small_cnn()
    rng = np.random.default_rng(1)
    runner = get_backend("torch-cuda").load(module, 1)
    for batch in (2, 5, 2):
        x = rng.standard_normal((batch, 3, 12, 12)).astype(np.float32)
        assert _relative(runner({"x": x})[0], _cpu(module, x)) < 1e-5
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    first = runner({"x": x})[0]
    x *= 2.0  # the same object changed in place: a resident input does not see it
    np.testing.assert_array_equal(runner({"x": x})[0], first)
    copying = get_backend("torch-cuda", resident_inputs=False).load(module, 1)
    assert _relative(copying({"x": x})[0], _cpu(module, x)) < 1e-5


def test_integer_inputs_keep_their_type_while_weights_go_half() -> None:
    torch.manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Embedding(50, 32), torch.nn.Linear(32, 16)).eval()
    tokens = np.random.default_rng(3).integers(0, 50, size=(4, 7))
    runner = get_backend("torch-cuda", dtype="float16").load(module, 1)
    got = runner({"tokens": tokens})[0]
    assert got.dtype == np.float32 and got.shape == (4, 7, 16)
    assert _relative(got, _cpu(module, tokens)) < 5e-3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_two_four_layers_run_on_cusparselt_and_match_dense(dtype: str) -> None:
    from torch.sparse import SparseSemiStructuredTensor

    module = _small_cnn()
    assert apply_two_four(module) == ["3", "7"]
    x = np.random.default_rng(2).standard_normal((4, 3, 16, 16)).astype(np.float32)
    options = {"dtype": dtype, "channels_last": True}
    sparse = get_backend("torch-cuda", semi_structured=True, **options).load(module, 1)
    dense = get_backend("torch-cuda", **options).load(module, 1)
    assert sparse.plan.converted == plan_semi_structured(module).converted == ("3", "7")
    assert "(3, 3) kernel" in sparse.plan.dense["0"]
    weights = [sparse.module.get_submodule(name).weight for name in ("3", "7")]
    assert all(isinstance(w, SparseSemiStructuredTensor) for w in weights)
    tolerance = 2e-2 if dtype == "bfloat16" else 5e-3
    assert _relative(sparse({"x": x})[0], dense({"x": x})[0]) < tolerance
    assert _relative(sparse({"x": x})[0], _cpu(module, x)) < 2 * tolerance
    comparison = compare_latency(sparse, dense, {"x": x}, warmup=2, repeats=10, rtol=tolerance)
    assert comparison.outputs_match and comparison.speedup > 0


def test_a_bare_linear_layer_converts_in_place() -> None:
    torch.manual_seed(4)
    linear = torch.nn.Linear(64, 32)
    apply_two_four(linear)
    x = np.random.default_rng(4).standard_normal((8, 64)).astype(np.float32)
    runner = get_backend("torch-cuda", dtype="float16", semi_structured=True).load(linear, 1)
    assert runner.plan.converted == ("",)
    assert _relative(runner({"x": x})[0], _cpu(linear, x)) < 5e-3


def test_a_module_that_syncs_cannot_be_captured_and_says_so() -> None:
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from workers.runtime.latency import get_backend

        class Syncs(torch.nn.Module):
            def forward(self, x):
                return x * float(x.sum().item())

        runner = get_backend("torch-cuda").load(Syncs(), 1)
        try:
            runner({"x": np.ones((2, 2), np.float32)})
        except RuntimeError as error:
            print("REFUSED:", error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert "REFUSED: the module cannot be captured in a CUDA graph" in result.stdout, result.stderr
    assert "cuda_graph=False" in result.stdout
