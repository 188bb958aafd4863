"""The training step's multi-tensor pieces equal their per-parameter definitions: the optimizer kdlab builds
(fused or foreach SGD) against torch's per-parameter loop, and the gradient norm against the norm of all
gradients concatenated."""

from __future__ import annotations

import pytest
import torch

from kdlab.config import load_recipe
from kdlab.train.prepare import make_optimizer, prepare
from kdlab.train.step import gradient_norm


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5))


def _groups(engine: torch.optim.Optimizer, net: torch.nn.Module, drop: tuple[str, ...]) -> list[dict]:
    """``engine``'s parameter groups (their settings, minus ``drop``) over ``net``'s parameters, split the way
    make_optimizer splits them (ndim > 1 first) when it made two groups."""
    params = list(net.parameters())
    members = [params] if len(engine.param_groups) == 1 else \
        [[p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]]
    return [{**{k: v for k, v in group.items() if k not in ("params", *drop)}, "params": chosen}
            for group, chosen in zip(engine.param_groups, members)]


@pytest.mark.parametrize("nesterov,scale", [(True, 64.0), (False, 1.0)])
def test_engine_sgd_matches_the_per_parameter_loop(digits_recipe, nesterov, scale):
    recipe = load_recipe(raw=digits_recipe(optim={"lr": 0.1, "momentum": 0.9, "nesterov": nesterov,
                                                  "weight_decay": 5e-4, "bias_lr_scale": scale}))
    prepared = prepare(recipe)
    engine = make_optimizer(prepared.method, prepared.recipe)
    assert any(group.get("fused") or group.get("foreach") for group in engine.param_groups)
    fast, slow = _net(0), _net(0)
    fast_opt = type(engine)(_groups(engine, fast, drop=()))
    slow_opt = torch.optim.SGD(_groups(engine, slow, drop=("fused", "foreach")), foreach=False)
    x = torch.randn(8, 3, 8, 8)
    for _ in range(5):
        for net, opt in ((fast, fast_opt), (slow, slow_opt)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(fast.parameters(), slow.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_norm_is_the_norm_of_all_gradients():
    net = _net(1)
    net(torch.randn(4, 3, 8, 8)).sum().backward()
    params = list(net.parameters()) + [torch.nn.Parameter(torch.ones(3))]  # one without a gradient
    expected = torch.cat([p.grad.flatten() for p in params if p.grad is not None]).double().norm()
    assert gradient_norm(params).item() == pytest.approx(expected.item(), rel=1e-5)
