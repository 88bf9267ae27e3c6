"""Data-free moments: Gaussian activation moments against Monte Carlo, BatchNorm and conv rules."""

from __future__ import annotations

import numpy as np
import torch

from spa.moments import ACTIVATIONS, Moments, activation_moments, estimate_moments
from spa.torch_bridge import lower_with_batchnorm


def test_relu_moments_match_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    mean = np.array([0.5, -0.3, 1.0])
    factor = rng.normal(size=(3, 3))
    cov = factor @ factor.T + 0.5 * np.eye(3)
    z = rng.multivariate_normal(mean, cov, size=400_000)
    relu = np.maximum(z, 0)
    estimate = activation_moments(Moments(1, mean, cov), lambda v: ACTIVATIONS["Relu"](v, None))  # type: ignore[arg-type]
    np.testing.assert_allclose(estimate.mean, relu.mean(axis=0), atol=0.01)
    np.testing.assert_allclose(np.diag(estimate.cov), relu.var(axis=0), rtol=0.02)
    empirical = np.cov(relu.T)
    off = ~np.eye(3, dtype=bool)
    # First-order Hermite cross terms: close, not exact.
    np.testing.assert_allclose(
        estimate.cov[off], empirical[off], atol=0.15 * np.abs(empirical[off]).max()
    )
    assert np.all(np.linalg.eigvalsh(estimate.cov) > -1e-9)


def test_batchnorm_and_conv_moments_follow_the_stored_statistics() -> None:
    conv = torch.nn.Conv2d(2, 3, 1, bias=False)
    norm = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).reshape(3, 2, 1, 1))
        norm.weight.copy_(torch.tensor([2.0, 0.5, 1.0]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        norm.running_var.copy_(torch.tensor([4.0, 4.0, 1.0]))
    module = torch.nn.Sequential(conv, norm).eval()
    model = lower_with_batchnorm(module, (torch.randn(2, 2, 4, 4),))
    output = model.graph.outputs[0].name
    moments = estimate_moments(model)[output]
    np.testing.assert_allclose(moments.mean, [0.1, -0.2, 0.3], atol=1e-6)
    gain = np.array([2.0, 0.5, 1.0]) * np.sqrt(
        np.array([4.0, 4.0, 1.0]) / (np.array([4.0, 4.0, 1.0]) + 1e-5)
    )
    np.testing.assert_allclose(np.diag(moments.cov), gain**2, rtol=1e-5)
    # Channels 0 and 1 read the same input (white assumption): fully correlated; channel 2 independent.
    np.testing.assert_allclose(moments.cov[0, 1], gain[0] * gain[1], rtol=1e-5)
    np.testing.assert_allclose(moments.cov[0, 2], 0.0, atol=1e-9)
