"""The training step's multi-tensor gradient norm equals the norm of all gradients concatenated."""

from __future__ import annotations

import pytest
import torch

from kdlab.train.step import gradient_norm


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5))


def test_gradient_norm_is_the_norm_of_all_gradients():
    net = _net(1)
    net(torch.randn(4, 3, 8, 8)).sum().backward()
    params = list(net.parameters()) + [torch.nn.Parameter(torch.ones(3))]  # one without a gradient
    expected = torch.cat([p.grad.flatten() for p in params if p.grad is not None]).double().norm()
    assert gradient_norm(params).item() == pytest.approx(expected.item(), rel=1e-5)
