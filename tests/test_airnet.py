"""airnet (kdlab.models.airnet): the whitening init, test-time augmentation, zoo options, and the engine pieces the
speedrun recipe needs (data-dependent init in prepare, BN-bias lr scaling)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlab.config import load_recipe
from kdlab.errors import KdlabError
from kdlab.models import create
from kdlab.train.prepare import make_optimizer, prepare


def _patches(x: torch.Tensor, k: int) -> torch.Tensor:
    n, c, h, w = x.shape
    rows = [x[:, :, i:i + k, j:j + k].reshape(n, -1) for i in range(h - k + 1) for j in range(w - k + 1)]
    return torch.cat(rows).double()


def test_whitening_filters_whiten_the_training_patches():
    torch.manual_seed(0)
    # correlated inputs: every 2x2x3 patch of a smooth random image
    x = F.avg_pool2d(torch.randn(64, 3, 18, 18), 3, stride=1)
    model = create("airnet", 10, options={"widths": [8, 8, 8]})
    model.fit_to_data(x)
    w = model.whiten.weight.detach().double()
    assert w.shape == (24, 3, 2, 2)
    torch.testing.assert_close(w[12:], -w[:12])
    patches = _patches(x, 2)
    # The filters' responses (each patch against each filter, same flattening as the conv) have second moment
    # diag(lambda / (lambda + eps)): close to the identity where lambda >> eps, decorrelated everywhere.
    responses = patches @ w[:12].reshape(12, -1).T
    moment = responses.T @ responses / len(patches)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    torch.testing.assert_close(moment, torch.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-6, rtol=1e-6)
    # and the conv computes exactly those responses
    conv = F.conv2d(x.double(), w[:12])
    torch.testing.assert_close(conv[:, :, 0, 0], (x[:, :, :2, :2].reshape(64, -1).double() @ w[:12].reshape(12, -1).T))


def test_tta_is_the_mean_of_the_views_logits_and_train_mode_sees_one_view():
    torch.manual_seed(0)
    model = create("airnet", 10, options={"widths": [8, 16, 16]})
    x = torch.randn(4, 3, 32, 32)
    model.train()
    with torch.no_grad():
        model(x)  # move the BN running statistics off their init
    model.eval()
    model.tta = 0

    def logits(v):
        with torch.no_grad():
            return model(v)

    plain, mirror = logits(x), logits(x.flip(-1))
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up, down = padded[..., :32, :32], padded[..., 2:, 2:]
    views = 0.25 * (plain + mirror) + 0.125 * (logits(up) + logits(up.flip(-1)) + logits(down) + logits(down.flip(-1)))
    model.tta = 1
    torch.testing.assert_close(logits(x), 0.5 * (plain + mirror))
    model.tta = 2
    torch.testing.assert_close(logits(x), views)
    out, features = model(x, return_features=True)
    torch.testing.assert_close(model.classifier(features), out)
    assert not torch.allclose(views, plain)


def test_dirac_init_and_shift_only_batchnorm():
    model = create("airnet", 10)
    conv = model.groups[1].conv2
    centre = conv.weight[:, :, 1, 1]
    torch.testing.assert_close(centre, torch.eye(conv.out_channels))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "whiten.weight" not in trainable and "whiten.bias" in trainable
    assert not any(name.endswith("norm1.weight") or name.endswith("norm2.weight") for name in trainable)


def test_zoo_options_are_checked():
    with pytest.raises(KdlabError, match="unknown model.options depth .*it takes widths"):
        create("airnet", 10, options={"depth": 3})
    with pytest.raises(KdlabError, match="tta must be 0, 1 or 2"):
        create("airnet", 10, options={"tta": 5})
    with pytest.raises(KdlabError, match="model resnet8: unknown model.options widths .*it takes none"):
        create("resnet8", 10, options={"widths": [1]})


def test_prepare_fits_the_whitening_init_on_training_inputs_and_scales_the_bias_lr(digits_recipe):
    recipe = load_recipe(raw=digits_recipe(
        model={"name": "airnet", "options": {"widths": [16, 32], "tta": 1}},
        optim={"lr": 0.2, "weight_decay": 0.01, "nesterov": True, "bias_lr_scale": 64}))
    prepared = prepare(recipe)
    weight = prepared.model.whiten.weight
    assert weight.abs().sum() > 0
    fresh = create("airnet", 10, in_channels=1, options={"widths": [16, 32], "tta": 1})
    assert not torch.allclose(fresh.whiten.weight, weight)
    optimizer = make_optimizer(prepared.method, prepared.recipe)
    big, small = optimizer.param_groups
    assert all(p.ndim > 1 for p in big["params"]) and all(p.ndim <= 1 for p in small["params"])
    assert (big["lr_scale"], small["lr_scale"]) == (1.0, 64)
    assert small["weight_decay"] == pytest.approx(0.01 / 64)


def test_the_scaled_group_steps_with_the_scaled_lr(digits_recipe, tmp_path):
    from kdlab.train.engine import train_epoch

    recipe = load_recipe(raw=digits_recipe(
        model={"name": "airnet", "options": {"widths": [16, 32]}}, schedule={"name": "constant"},
        optim={"lr": 0.01, "bias_lr_scale": 8}))
    prepared = prepare(recipe)
    optimizer = make_optimizer(prepared.method, prepared.recipe)
    train_epoch(prepared, optimizer, 0, max_steps=1)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.08])
