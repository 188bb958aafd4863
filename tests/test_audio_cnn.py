"""The log-mel CNNs: parameter counts by hand, the zoo contract on spectrogram shapes, input channels, multi-branch
splitting, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kdlab.models import create
from kdlab.models.audio_cnn import SMALL_WIDTHS, TINY_WIDTHS, WIDTHS, AudioCNN
from kdlab.models.multibranch import MultiBranch

NAMES = {"audio_cnn": WIDTHS, "audio_cnn_small": SMALL_WIDTHS, "audio_cnn_tiny": TINY_WIDTHS}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_params(widths, in_channels: int, num_classes: int) -> int:
    # per stage: two bias-free 3x3 convs (c -> w, w -> w), each followed by a BN with weight and bias (2w)
    total, channels = 0, in_channels
    for width in widths:
        total += 9 * channels * width + 2 * width + 9 * width * width + 2 * width
        channels = width
    return total + channels * num_classes + num_classes


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(NAMES))
@pytest.mark.parametrize("in_channels, num_classes", [(1, 10), (3, 50)])
def test_parameter_count_equals_the_hand_formula(name, in_channels, num_classes):
    model = create(name, num_classes=num_classes, in_channels=in_channels)
    assert n_params(model) == expected_params(NAMES[name], in_channels, num_classes)


def test_documented_parameter_counts():
    assert n_params(create("audio_cnn", 10, in_channels=1)) == 1_175_210
    assert n_params(create("audio_cnn_small", 10, in_channels=1)) == 295_002
    assert n_params(create("audio_cnn_tiny", 10, in_channels=1)) == 74_354


def test_layout():
    model = create("audio_cnn", 10, in_channels=1)
    assert isinstance(model, AudioCNN) and model.feature_dim == 256
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    for index, width in enumerate(WIDTHS, start=1):
        stage = getattr(model, f"stage{index}")
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        layout = [(c.out_channels, c.kernel_size, c.padding, c.bias) for c in convs]
        assert layout == [(width, (3, 3), (1, 1), None)] * 2
        pools = [m for m in stage.modules() if isinstance(m, nn.MaxPool2d)]
        assert len(pools) == (1 if index < 4 else 0)
        assert sum(isinstance(m, nn.BatchNorm2d) for m in stage.modules()) == 2
    assert create("audio_cnn_small", 10).feature_dim == 128
    assert create("audio_cnn_tiny", 10).feature_dim == 64
    with pytest.raises(ValueError, match="4 stages"):
        AudioCNN((16, 32, 64), 10)


def check_contract(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    with torch.no_grad():
        logits = model(x)
        logits2, features = model(x, return_features=True)
    assert logits.shape == (x.shape[0], num_classes)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == model.feature_dim
    assert features.shape == (x.shape[0], model.feature_dim)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(model.classifier(features), logits)


@pytest.mark.parametrize("name", sorted(NAMES))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_zoo_contract_on_spectrograms(name, in_channels):
    model = create(name, num_classes=7, in_channels=in_channels).eval()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_channels
    for shape in ((64, 32), (40, 101)):
        check_contract(model, torch.randn(2, in_channels, *shape), 7)
    check_contract(model, torch.randn(1, in_channels, 40, 101), 7)  # a batch of one
    check_contract(model, torch.randn(2, in_channels, 8, 16), 7)  # the smallest size: a 1 x 2 map after 3 pools


def test_feature_map_size():
    model = create("audio_cnn_small", 5, in_channels=1).eval()
    with torch.no_grad():
        assert model.feature_map(torch.randn(1, 1, 40, 101)).shape == (1, 128, 5, 12)  # 40 -> 20 -> 10 -> 5
        assert model.feature_map(torch.randn(1, 1, 64, 32)).shape == (1, 128, 8, 4)


def test_dense_logits_average_to_the_logits():
    model = create("audio_cnn_small", 10, in_channels=1).eval()
    x = torch.randn(2, 1, 40, 64)
    with torch.no_grad():
        dense = model.dense_logits(model.feature_map(x))
        torch.testing.assert_close(dense.mean(dim=(2, 3)), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("trunk_stages", [None, 2, 0])
def test_multibranch_branches_equal_their_exported_networks(trunk_stages):
    model = MultiBranch("audio_cnn_small", num_classes=5, in_channels=1, branches=3, trunk_stages=trunk_stages).eval()
    assert model.trunk_stages == (3 if trunk_stages is None else trunk_stages)
    x = torch.randn(4, 1, 40, 48)
    with torch.no_grad():
        logits, features = model(x, return_features=True)
        for i in range(3):
            single = model.export(i).eval()
            assert isinstance(single, AudioCNN)
            z, h = single(x, return_features=True)
            torch.testing.assert_close(logits[i], z)
            torch.testing.assert_close(features[i], h)
    assert len({tuple(z[0].tolist()) for z in logits}) == 3  # branches differ (own initialisation)


def test_multibranch_shares_the_trunk_parameters_only():
    single = create("audio_cnn_small", 5, in_channels=1)
    tail = n_params(single.stage4) + n_params(single.classifier)
    model = MultiBranch("audio_cnn_small", num_classes=5, in_channels=1, branches=4)
    assert n_params(model) == n_params(single) + 3 * tail


@pytest.mark.parametrize("name", sorted(NAMES))
def test_train_mode_backward_reaches_every_parameter(name):
    model = create(name, num_classes=5, in_channels=1).train()
    logits, features = model(torch.randn(4, 1, 40, 32), return_features=True)
    (logits.logsumexp(1).mean() + features.pow(2).mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_channels_last_and_bf16_autocast():
    model = create("audio_cnn_small", num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 40, 64)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), reference, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x.to(memory_format=torch.channels_last))
    assert logits.shape == (2, 10) and torch.isfinite(logits.float()).all()


def test_reference_init():
    model = create("audio_cnn", 10)
    conv = model.stage4[1][0]
    assert conv.weight.std().item() == pytest.approx((2.0 / (conv.out_channels * 9)) ** 0.5, rel=0.05)
    bn = model.stage4[1][1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
