"""CIFAR ResNets: resnet8 ... resnet110, resnet8x4, resnet32x4 (basic blocks), and the bottleneck networks of the
online-distillation papers, resnet110_bottleneck and wrn_20_8.

Basic-block networks: layer structure and parameter counts follow the CIFAR KD benchmark definition,
HobbitLong/RepDistiller ``models/resnet.py`` (the same net is in megvii-research/mdistiller
``mdistiller/models/cifar/resnet.py``): a 3x3 conv stem with BN and ReLU, three stages of basic blocks
(n = (depth - 2) / 6 each, the 2nd and 3rd with stride 2), a 1x1 conv + BN projection shortcut where the shape
changes, global average pooling and a linear classifier.

Bottleneck networks: ONE (Lan et al. 2018), CL-ILR and OKDDip (Chen et al. 2020, DefangChen/OKDDip
``models/model_cifar/resnet_GL.py``) report "ResNet-110" and "WRN-20-8" with the same stem and three stages of
16, 32 and 64 planes, but with torchvision-style bottleneck blocks (1x1 reduce, 3x3 with the stride, 1x1 expand to
4 x planes; n = (depth - 2) / 9 blocks per stage): ResNet-110 is [12, 12, 12] blocks with inner width = planes,
WRN-20-8 is [2, 2, 2] blocks with an inner width 8 x planes (torchvision's ``width_per_group = 64 * 8``). Both end
in 256 features, the feature widths docs/methods/online.md §5.1 gives for OKDDip's attention. ``wrn_20_8`` is therefore
*not* a Zagoruyko-Komodakis wide ResNet (those are ``wrn_D_K`` with D = 6n + 4, :mod:`kdlab.models.wide_resnet`);
the name is the one these papers use.

Paper: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (Sec. 4.2, the
CIFAR-10 networks).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdlab.errors import KdlabError
from kdlab.models import register
from kdlab.models._base import Classifier, init_conv_bn

#: channel widths (stem, stage 1, stage 2, stage 3)
NARROW = (16, 16, 32, 64)
WIDE = (32, 64, 128, 256)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 conv (to ``width`` = planes x ``width_factor``) - 3x3 conv with the stride - 1x1 conv to 4 x planes, each
    with BN (ReLU after the first two), a residual connection (1x1 conv + BN where the shape changes), ReLU after
    the sum: torchvision's ``Bottleneck``, the block of the ONE / OKDDip CIFAR networks."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, width_factor: int = 1):
        super().__init__()
        width = planes * width_factor
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        if stride != 1 or in_planes != out_planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Classifier):
    """CIFAR ResNet of ``depth`` layers with channel ``widths`` (stem, planes of stage 1..3).

    ``bottleneck=False``: basic blocks, depth = 6n + 2, stage widths as given. ``bottleneck=True``: bottleneck
    blocks, depth = 9n + 2, each stage ends in 4 x its planes, with inner width planes x ``width_factor``.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3,
                 bottleneck: bool = False, width_factor: int = 1):
        super().__init__()
        layers_per_block = 3 if bottleneck else 2
        if depth < 2 + 3 * layers_per_block or (depth - 2) % (3 * layers_per_block) != 0:
            form = "9n+2 with n >= 1 (11, 20, 29, ..., 110)" if bottleneck else "6n+2 with n >= 1 (8, 14, 20, 32, ...)"
            raise KdlabError(f"CIFAR ResNet depth must be {form}, got {depth}")
        blocks_per_stage = (depth - 2) // (3 * layers_per_block)
        if bottleneck:
            def block(in_planes: int, planes: int, stride: int) -> nn.Module:
                return Bottleneck(in_planes, planes, stride, width_factor)
            expansion = Bottleneck.expansion
        else:
            block, expansion = BasicBlock, 1
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for index, planes in enumerate(widths[1:], start=1):
            blocks = [block(in_planes, planes, 1 if index == 1 else 2)]
            blocks += [block(planes * expansion, planes, 1) for _ in range(blocks_per_stage - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            in_planes = planes * expansion
        self.classifier = nn.Linear(in_planes, num_classes)
        init_conv_bn(self)

    stage_modules = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",))

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index == 0:
            return F.relu(self.bn1(self.conv1(x)))
        return getattr(self, f"layer{index}")(x)


def _register(name: str, depth: int, widths: tuple[int, int, int, int], bottleneck: bool = False,
              width_factor: int = 1) -> None:
    def build(num_classes: int, in_channels: int = 3) -> ResNet:
        return ResNet(depth, widths, num_classes, in_channels, bottleneck, width_factor)

    build.__name__ = name
    if bottleneck:
        build.__doc__ = (f"CIFAR ResNet-{depth} of bottleneck blocks (planes {widths[1:]}, inner width x"
                         f"{width_factor}), as in the ONE / OKDDip code.")
    else:
        build.__doc__ = f"CIFAR ResNet-{depth} with widths {widths}."
    register(name)(build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, NARROW)
_register("resnet8x4", 8, WIDE)
_register("resnet32x4", 32, WIDE)
_register("resnet110_bottleneck", 110, NARROW, bottleneck=True)
_register("wrn_20_8", 20, NARROW, bottleneck=True, width_factor=8)
