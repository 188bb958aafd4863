"""Wide residual networks ``wrn_D_K`` (depth D = 6n + 4, widen factor K).

Layer structure and parameter counts follow the CIFAR KD benchmark definition, HobbitLong/RepDistiller
``models/wrn.py`` (also megvii-research/mdistiller ``mdistiller/models/cifar/wrn.py``) with dropout 0: a 3x3 conv
stem with 16 channels, three stages of n pre-activation basic blocks with 16K, 32K and 64K channels (the 2nd and 3rd
with stride 2; a 1x1 conv shortcut on the pre-activated input where the shape changes), a final BN + ReLU, global
average pooling and a linear classifier.

Paper: S. Zagoruyko, N. Komodakis, "Wide Residual Networks", BMVC 2016.

The common configurations are registered by name; :func:`kdlab.models.create` builds any other ``wrn_D_K`` on the
fly with :func:`wide_resnet`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdlab.errors import KdlabError
from kdlab.models import register
from kdlab.models._base import Classifier, init_conv_bn

#: (depth, widen factor) pairs registered as ``wrn_{depth}_{widen}``
REGISTERED = ((16, 1), (16, 2), (16, 4), (16, 8), (28, 2), (28, 4), (28, 10), (40, 1), (40, 2), (40, 4))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with a residual connection (the WRN "B(3,3)" block)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        # Where the shape changes, the shortcut is a 1x1 conv on the pre-activated input; otherwise the identity.
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv1(act)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        residual = x if self.shortcut is None else self.shortcut(act)
        return out + residual


def check_size(depth: int, widen_factor: int) -> None:
    """A :class:`~kdlab.errors.KdlabError` unless ``wrn_{depth}_{widen_factor}`` is a wide ResNet."""
    if depth < 10 or (depth - 4) % 6 != 0:
        raise KdlabError(
            f"wide ResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got wrn_{depth}_{widen_factor}"
        )
    if widen_factor < 1:
        raise KdlabError(f"wide ResNet widen factor must be at least 1, got wrn_{depth}_{widen_factor}")


class WideResNet(Classifier):
    """WRN-``depth``-``widen_factor`` for CIFAR-sized inputs."""

    def __init__(
        self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3, drop_rate: float = 0.0
    ):
        super().__init__()
        check_size(depth, widen_factor)
        blocks_per_stage = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = self._make_stage(widths[0], widths[1], blocks_per_stage, 1, drop_rate)
        self.block2 = self._make_stage(widths[1], widths[2], blocks_per_stage, 2, drop_rate)
        self.block3 = self._make_stage(widths[2], widths[3], blocks_per_stage, 2, drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.classifier = nn.Linear(widths[3], num_classes)
        init_conv_bn(self)
        nn.init.zeros_(self.classifier.bias)

    @staticmethod
    def _make_stage(in_planes: int, out_planes: int, num_blocks: int, stride: int, drop_rate: float) -> nn.Sequential:
        blocks = [PreActBlock(in_planes, out_planes, stride, drop_rate)]
        blocks += [PreActBlock(out_planes, out_planes, 1, drop_rate) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    stage_modules = (("conv1",), ("block1",), ("block2",), ("block3", "bn"))

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index == 0:
            return self.conv1(x)
        if index == 3:
            return F.relu(self.bn(self.block3(x)))
        return getattr(self, f"block{index}")(x)


def wide_resnet(depth: int, widen_factor: int, num_classes: int, in_channels: int = 3) -> WideResNet:
    """Build ``wrn_{depth}_{widen_factor}``; a depth that is not 6n + 4 is a :class:`~kdlab.errors.KdlabError`."""
    return WideResNet(depth, widen_factor, num_classes, in_channels)


def _register(depth: int, widen_factor: int) -> None:
    name = f"wrn_{depth}_{widen_factor}"

    def build(num_classes: int, in_channels: int = 3) -> WideResNet:
        return wide_resnet(depth, widen_factor, num_classes, in_channels)

    build.__name__ = name
    build.__doc__ = f"Wide ResNet WRN-{depth}-{widen_factor}."
    register(name)(build)


for _depth, _widen in REGISTERED:
    _register(_depth, _widen)
