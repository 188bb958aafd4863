"""ShuffleNet (v1) for CIFAR-sized inputs: ``shufflenetv1`` (groups 3, stage widths 240-480-960).

Layer structure and parameter counts follow the CIFAR KD benchmark definition, HobbitLong/RepDistiller
``models/ShuffleNetv1.py`` (``ShuffleV1``; also megvii-research/mdistiller
``mdistiller/models/cifar/ShuffleNetv1.py``): a 1x1 conv stem to 24 channels, three stages of 4, 8 and 4 bottleneck
units (grouped 1x1 conv, channel shuffle, 3x3 depthwise conv, grouped 1x1 conv; the first unit of each stage has
stride 2 and concatenates a 3x3 average-pooled shortcut, the others add an identity shortcut), global average
pooling and a linear classifier. As in the reference, the depthwise conv is followed by a ReLU, the first unit's
first 1x1 conv is not grouped (its input has only 24 channels), and the weights keep PyTorch's default init.

Paper: X. Zhang, X. Zhou, M. Lin, J. Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for
Mobile Devices", CVPR 2018.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdlab.models import register
from kdlab.models._base import Classifier, channel_shuffle

STEM_CHANNELS = 24


class ShuffleUnit(nn.Module):
    """ShuffleNet unit; with stride 2 its branch gives ``out_channels - in_channels`` channels, concatenated."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, first_groups: int):
        super().__init__()
        self.downsample = stride == 2
        branch_channels = out_channels - in_channels if self.downsample else out_channels
        mid_channels = branch_channels // 4
        self.first_groups = first_groups
        self.conv1 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(
            mid_channels, mid_channels, kernel_size=3, stride=stride, padding=1, groups=mid_channels, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, branch_channels, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_channels)
        self.shortcut = nn.AvgPool2d(kernel_size=3, stride=2, padding=1) if self.downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.shortcut(x)
        out = torch.cat([out, residual], dim=1) if self.downsample else out + residual
        return F.relu(out)


class ShuffleNetV1(Classifier):
    """ShuffleNet v1 with ``groups`` groups, stage output widths ``widths`` and ``num_units`` units per stage."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (240, 480, 960),
        num_units: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        stages = []
        channels = STEM_CHANNELS
        for stage, (width, count) in enumerate(zip(widths, num_units)):
            units = []
            for i in range(count):
                first_groups = 1 if stage == 0 and i == 0 else groups
                units.append(ShuffleUnit(channels, width, 2 if i == 0 else 1, groups, first_groups))
                channels = width
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.classifier = nn.Linear(channels, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out


@register("shufflenetv1")
def shufflenetv1(num_classes: int, in_channels: int = 3) -> ShuffleNetV1:
    """ShuffleNet v1, groups 3 (RepDistiller's ``ShuffleV1``)."""
    return ShuffleNetV1(num_classes, in_channels)
