"""MobileNetV2 for CIFAR-sized inputs: ``mobilenetv2`` (width 1.0) and ``mobilenetv2_half`` (width 0.5).

Layer structure and parameter counts follow the CIFAR KD benchmark definition, HobbitLong/RepDistiller
``models/mobilenetv2.py`` (``mobilenetv2_T_w(T=6, W)``; ``mobile_half`` is W = 0.5, the student of the KD benchmark
tables; also megvii-research/mdistiller ``mdistiller/models/cifar/mobilenetv2.py``): a stride-2 3x3 conv stem,
seven stages of inverted residual blocks (expansion 1 in the first, 6 after; the second stage keeps stride 1 for
32x32 inputs), ReLU rather than ReLU6, a 1x1 conv to 1280 channels, global average pooling and a linear classifier.
As in the reference, every block has its 1x1 expansion conv, even with expansion 1.

Paper: M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdlab.models import register
from kdlab.models._base import Classifier, conv_bn, init_conv_bn

#: (output channels, blocks, stride of the first block) per stage; the first stage has expansion 1
STAGES = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise conv, linear 1x1 projection; identity shortcut when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            conv_bn(in_channels, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, out_channels, 1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_shortcut else out


class MobileNetV2(Classifier):
    """MobileNetV2 with channel multiplier ``width`` and inverted-residual expansion ``expand_ratio``."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, expand_ratio: int = 6):
        super().__init__()
        channels = int(32 * width)
        self.stem = conv_bn(in_channels, channels, 3, stride=2)
        stages = []
        for index, (out_channels, num_blocks, stride) in enumerate(STAGES):
            out_channels = int(out_channels * width)
            expansion = 1 if index == 0 else expand_ratio
            blocks = []
            for i in range(num_blocks):
                blocks.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expansion))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        last_channels = int(1280 * width) if width > 1.0 else 1280
        self.head = conv_bn(channels, last_channels, 1)
        self.classifier = nn.Linear(last_channels, num_classes)
        init_conv_bn(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int = 3) -> MobileNetV2:
    """MobileNetV2, width 1.0, expansion 6."""
    return MobileNetV2(num_classes, in_channels, width=1.0)


@register("mobilenetv2_half")
def mobilenetv2_half(num_classes: int, in_channels: int = 3) -> MobileNetV2:
    """MobileNetV2, width 0.5, expansion 6 (RepDistiller's ``mobile_half``)."""
    return MobileNetV2(num_classes, in_channels, width=0.5)
