"""VGG with batch norm for CIFAR-sized inputs (vgg8, vgg11, vgg13, vgg16, vgg19).

Layer structure and parameter counts follow the CIFAR KD benchmark definition, HobbitLong/RepDistiller
``models/vgg.py`` (``vgg*_bn``; also megvii-research/mdistiller ``mdistiller/models/cifar/vgg.py``): five blocks of
3x3 conv (with bias) + BN + ReLU layers, configurations 'S' (vgg8), 'A', 'B', 'D' and 'E'; 2x2 max pooling after
the first three blocks, global average pooling after the last, and a single ``Linear(512, K)`` classifier instead
of VGG's three fully connected layers. (The reference adds a fourth max pool for 64x64 inputs; here the global
average pool alone adapts to the input size, which is identical on 32x32 inputs.)

Paper: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015;
batch norm: S. Ioffe, C. Szegedy, ICML 2015.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdlab.models import register
from kdlab.models._base import Classifier, init_conv_bn

#: conv widths of the five blocks, per configuration
CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "S": ((64,), (128,), (256,), (512,), (512,)),
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _conv_block(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        layers += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers)


class VGG(Classifier):
    """VGG-BN on the block ``config`` (five tuples of conv widths)."""

    def __init__(self, config: tuple[tuple[int, ...], ...], num_classes: int, in_channels: int = 3):
        super().__init__()
        block_in = (in_channels,) + tuple(widths[-1] for widths in config[:-1])
        self.block0, self.block1, self.block2, self.block3, self.block4 = (
            _conv_block(c, widths) for c, widths in zip(block_in, config)
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.classifier = nn.Linear(config[-1][-1], num_classes)
        init_conv_bn(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    stage_modules = (("block0",), ("block1",), ("block2",), ("block3",), ("block4",))

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        out = getattr(self, f"block{index}")(x)
        return self.pool(out) if index < 3 else out


def _register(name: str, config: str) -> None:
    def build(num_classes: int, in_channels: int = 3) -> VGG:
        return VGG(CONFIGS[config], num_classes, in_channels)

    build.__name__ = name
    build.__doc__ = f"VGG-BN, configuration {config!r}."
    register(name)(build)


for _name, _config in (("vgg8", "S"), ("vgg11", "A"), ("vgg13", "B"), ("vgg16", "D"), ("vgg19", "E")):
    _register(_name, _config)
