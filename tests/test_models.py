"""The model zoo: reference parameter counts, the forward/feature contract, input sizes and channels, wrn_D_K."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kdlab.errors import KdlabError
from kdlab.models import create, names
from kdlab.models.shufflenetv2 import ShuffleNetV2

# Parameter counts of the CIFAR KD benchmark definitions (HobbitLong/RepDistiller, megvii-research/mdistiller) for
# 100 classes and RGB input.
REFERENCE_PARAMS = {
    "resnet8": 83_892,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet110_bottleneck": 1_170_868,  # the ONE / OKDDip "ResNet-110" (bottleneck blocks [12, 12, 12])
    "wrn_20_8": 6_871_220,  # the ONE / OKDDip "WRN-20-8" (bottleneck blocks [2, 2, 2], inner width x8)
    "resnet32x4": 7_433_860,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
    "mobilenetv2_half": 812_836,
    "shufflenetv1": 949_258,
    "shufflenetv2": 1_355_528,
}

EXPECTED_NAMES = (
    [f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)]
    + ["resnet8x4", "resnet32x4", "resnet110_bottleneck", "wrn_20_8"]
    + [f"wrn_{d}_{k}" for d, k in ((16, 1), (16, 2), (16, 4), (16, 8), (28, 2), (28, 4), (28, 10), (40, 1), (40, 2),
                                   (40, 4))]
    + ["vgg8", "vgg11", "vgg13", "vgg16", "vgg19"]
    + ["mobilenetv2", "mobilenetv2_half", "shufflenetv1", "shufflenetv2", "cnn_small8", "cnn_small28"]
    + ["audio_cnn", "audio_cnn_small", "audio_cnn_tiny", "airnet"]
)

# One small member per family, for the costlier checks.
FAMILY_REPRESENTATIVES = ["resnet8", "wrn_16_1", "vgg8", "mobilenetv2_half", "shufflenetv1", "shufflenetv2",
                          "cnn_small8"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_contract(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """Logits are (N, K); features are (N, feature_dim) from the same pass; the classifier maps them to the logits."""
    with torch.no_grad():
        logits = model(x)
        logits2, features = model(x, return_features=True)
        assert logits.shape == (x.shape[0], num_classes)
        assert isinstance(model.classifier, nn.Linear)
        assert features.shape == (x.shape[0], model.feature_dim)
        assert model.classifier.in_features == model.feature_dim
        assert torch.isfinite(logits).all()
        torch.testing.assert_close(logits2, logits)
        torch.testing.assert_close(model.classifier(features), logits)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registered_names():
    assert sorted(EXPECTED_NAMES) == names()


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_reference_parameter_counts(name):
    assert n_params(create(name, num_classes=100, in_channels=3)) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", names())
def test_grey_32x32_forward_and_features(name):
    model = create(name, num_classes=10, in_channels=1).eval()
    check_contract(model, torch.randn(2, 1, 32, 32), 10)


@pytest.mark.parametrize("name", names())
def test_rgb_28x28_forward(name):
    # Global average pooling lets every net take inputs that are not 32x32.
    model = create(name, num_classes=7, in_channels=3).eval()
    check_contract(model, torch.randn(2, 3, 28, 28), 7)


def test_small_nets_on_their_own_input_sizes():
    check_contract(create("cnn_small8", num_classes=10, in_channels=1).eval(), torch.rand(2, 1, 8, 8), 10)
    check_contract(create("cnn_small28", num_classes=10, in_channels=1).eval(), torch.rand(2, 1, 28, 28), 10)


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_train_mode_backward_reaches_every_parameter(name):
    model = create(name, num_classes=5, in_channels=3).train()
    logits, features = model(torch.randn(4, 3, 32, 32), return_features=True)
    (logits.logsumexp(1).mean() + features.pow(2).mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_channels_last_and_bf16_autocast(name):
    model = create(name, num_classes=10, in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), reference, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, features = model(x.to(memory_format=torch.channels_last), return_features=True)
    assert logits.shape == (2, 10) and features.shape == (2, model.feature_dim)
    assert torch.isfinite(logits.float()).all()


def test_torch_compile_traces_without_graph_breaks():
    # fullgraph=True fails on any graph break (Python-side data-dependent control flow). The "eager" backend checks the
    # tracing without paying for code generation. ShuffleNet V2's split and channel shuffle are the trickiest ops; a
    # one-unit-per-stage version has them all and traces quickly.
    model = ShuffleNetV2(num_classes=10, in_channels=3, widths=(16, 32, 64), num_units=(1, 1, 1), last_channels=64)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        logits, features = compiled(x, return_features=True)
        torch.testing.assert_close(logits, model(x))
    assert features.shape == (2, 64)


def test_unknown_model_is_a_user_error():
    with pytest.raises(KdlabError, match="nope"):
        create("nope", 10)


def test_any_wrn_is_built_on_the_fly():
    assert "wrn_22_3" not in names()
    model = create("wrn_22_3", num_classes=10, in_channels=1).eval()
    assert model.feature_dim == 64 * 3
    assert len(model.block1) == len(model.block2) == len(model.block3) == 3  # (22 - 4) / 6 blocks per stage
    check_contract(model, torch.randn(2, 1, 32, 32), 10)


@pytest.mark.parametrize("name", ["wrn_20_4", "wrn_17_2", "wrn_4_1", "wrn_16_0"])
def test_bad_wrn_is_a_user_error(name):
    with pytest.raises(KdlabError, match=name):
        create(name, 10)


def test_bad_wrn_depth_says_why():
    with pytest.raises(KdlabError, match=r"6n\+4"):
        create("wrn_20_4", 10)


def _bottleneck_params(in_planes: int, planes: int, width: int, projection: bool) -> int:
    convs = in_planes * width + 9 * width * width + width * 4 * planes
    bns = 2 * width + 2 * width + 2 * 4 * planes
    return convs + bns + (in_planes * 4 * planes + 2 * 4 * planes if projection else 0)


@pytest.mark.parametrize("name, blocks, width_factor", [("resnet110_bottleneck", 12, 1), ("wrn_20_8", 2, 8)])
def test_bottleneck_networks_match_their_definition(name, blocks, width_factor):
    # Counted by hand from the ONE / OKDDip definition: 3x3 stem (16) + BN, three stages of bottlenecks with planes
    # 16, 32, 64 (out 4 x planes, inner width planes x width_factor, a projection in each stage's first block),
    # 256 features into the classifier.
    expected, in_planes = 3 * 16 * 9 + 2 * 16, 16
    for planes in (16, 32, 64):
        expected += _bottleneck_params(in_planes, planes, planes * width_factor, True)
        expected += (blocks - 1) * _bottleneck_params(4 * planes, planes, planes * width_factor, False)
        in_planes = 4 * planes
    expected += 256 * 100 + 100
    model = create(name, 100)
    assert n_params(model) == expected
    assert model.feature_dim == 256
    assert len(model.layer1) == len(model.layer3) == blocks
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert model.layer1[0].conv2.out_channels == 16 * width_factor
    check_contract(model.eval(), torch.randn(2, 3, 32, 32), 100)


def test_in_channels_reach_the_stem():
    for name in FAMILY_REPRESENTATIVES:
        model = create(name, num_classes=10, in_channels=1)
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first_conv.in_channels == 1, name


def test_reference_init():
    # Kaiming normal (fan-out) convs, BN weight 1 and bias 0; VGG's and MobileNetV2's classifiers are N(0, 0.01).
    resnet = create("resnet32x4", 100)
    conv = resnet.layer3[0].conv2
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    bn = resnet.layer3[0].bn2
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    for name in ("vgg13", "mobilenetv2_half"):
        classifier = create(name, 100).classifier
        assert classifier.weight.std().item() == pytest.approx(0.01, rel=0.1)
        assert torch.all(classifier.bias == 0)
    assert torch.all(create("wrn_16_2", 100).classifier.bias == 0)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "mobilenetv2_half", "shufflenetv1", "shufflenetv2"])
def test_dense_logits_average_to_the_logits(name):
    """The classifier is linear, so the mean over positions of the dense logits equals the pooled logits."""
    torch.manual_seed(0)
    model = create(name, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feature_map = model.feature_map(x)
        dense = model.dense_logits(feature_map)
        assert dense.shape[:2] == (2, 10) and dense.shape[2:] == feature_map.shape[2:]
        assert torch.allclose(dense.mean(dim=(2, 3)), model(x), atol=1e-4)
