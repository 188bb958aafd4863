"""ShuffleNet V2 (1x) for CIFAR-sized inputs: ``shufflenetv2`` (stage widths 116-232-464, 1024 features).

Layer structure and parameter counts follow the CIFAR KD benchmark definition, HobbitLong/RepDistiller
``models/ShuffleNetv2.py`` (``ShuffleV2``, net size 1; also megvii-research/mdistiller
``mdistiller/models/cifar/ShuffleNetv2.py``): a 1x1 conv stem to 24 channels, three stages each made of one
stride-2 down-sampling unit (two branches, concatenated) and 3, 7 and 3 basic units (channel split in halves, one
half through 1x1 conv, 3x3 depthwise conv and 1x1 conv, concatenated back), each unit ending in a channel shuffle
with 2 groups; then a 1x1 conv to 1024 channels, global average pooling and a linear classifier. The weights keep
PyTorch's default init, as in the reference.

Paper: N. Ma, X. Zhang, H.-T. Zheng, J. Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", ECCV 2018.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdlab.models import register
from kdlab.models._base import Classifier, channel_shuffle, conv_bn

STEM_CHANNELS = 24


class BasicUnit(nn.Module):
    """Keep half of the channels, transform the other half, concatenate and shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.split = (channels // 2, channels - channels // 2)
        half = self.split[1]
        self.branch = nn.Sequential(
            conv_bn(half, half, 1),
            conv_bn(half, half, 3, groups=half, relu=False),
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, transformed = torch.split(x, self.split, dim=1)
        out = torch.cat([kept, self.branch(transformed)], dim=1)
        return channel_shuffle(out, 2)


class DownUnit(nn.Module):
    """Two stride-2 branches on the whole input, each giving half of ``out_channels``; concatenate and shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.left = nn.Sequential(
            conv_bn(in_channels, in_channels, 3, stride=2, groups=in_channels, relu=False),
            conv_bn(in_channels, half, 1),
        )
        self.right = nn.Sequential(
            conv_bn(in_channels, half, 1),
            conv_bn(half, half, 3, stride=2, groups=half, relu=False),
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.left(x), self.right(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(Classifier):
    """ShuffleNet V2: stage widths ``widths``, ``num_units`` basic units per stage, ``last_channels`` features."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (116, 232, 464),
        num_units: tuple[int, int, int] = (3, 7, 3),
        last_channels: int = 1024,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        stages = []
        channels = STEM_CHANNELS
        for width, count in zip(widths, num_units):
            stages.append(nn.Sequential(DownUnit(channels, width), *(BasicUnit(width) for _ in range(count))))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.head = conv_bn(channels, last_channels, 1)
        self.classifier = nn.Linear(last_channels, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.head(self.layer3(self.layer2(self.layer1(out))))
        return out


@register("shufflenetv2")
def shufflenetv2(num_classes: int, in_channels: int = 3) -> ShuffleNetV2:
    """ShuffleNet V2 1x (RepDistiller's ``ShuffleV2``)."""
    return ShuffleNetV2(num_classes, in_channels)
