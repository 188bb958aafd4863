"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4).

Layer structure and parameter counts follow the CIFAR KD benchmark definition, HobbitLong/RepDistiller
``models/resnet.py`` (the same net is in megvii-research/mdistiller ``mdistiller/models/cifar/resnet.py``): a 3x3
conv stem with BN and ReLU, three stages of basic blocks (n = (depth - 2) / 6 each, the 2nd and 3rd with stride 2),
a 1x1 conv + BN projection shortcut where the shape changes, global average pooling and a linear classifier.

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


class ResNet(Classifier):
    """CIFAR ResNet of ``depth`` = 6n + 2 layers with basic blocks and channel ``widths`` (stem, stage 1..3)."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise KdlabError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_stage(widths[0], widths[1], blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(widths[1], widths[2], blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(widths[2], widths[3], blocks_per_stage, stride=2)
        self.classifier = nn.Linear(widths[3], num_classes)
        init_conv_bn(self)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    stage_modules = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",))

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index == 0:
            return F.relu(self.bn1(self.conv1(x)))
        return getattr(self, f"layer{index}")(x)


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    def build(num_classes: int, in_channels: int = 3) -> ResNet:
        return ResNet(depth, widths, num_classes, in_channels)

    build.__name__ = name
    build.__doc__ = f"CIFAR ResNet-{depth} with widths {widths}."
    register(name)(build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, NARROW)
_register("resnet8x4", 8, WIDE)
_register("resnet32x4", 32, WIDE)
