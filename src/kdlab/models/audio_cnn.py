"""Compact CNNs for log-mel spectrograms: ``audio_cnn`` (widths 32-64-128-256), ``audio_cnn_small``
(16-32-64-128) and ``audio_cnn_tiny`` (8-16-32-64).

The input is a spectrogram treated as a one-channel image, N x 1 x F x T (F mel bands, T frames). Four stages, each
two 3x3 conv (no bias) + BN + ReLU layers at the stage's width, with a 2x2 max pool (stride 2) after each of the
first three stages; then global average pooling over frequency and time and a linear classifier. Pooling floors
odd sizes, so F and T must each be at least 8 (a 1 x 1 map after the third pool); T >= 16 frames is the intended
range. No dropout. Convs use He (Kaiming) fan-out init (:func:`~kdlab.models._base.init_conv_bn`), the classifier
PyTorch's default.

This is the usual VGG-style baseline of audio tagging and sound-event papers (pairs of 3x3 conv-BN-ReLU with
pooling between them, global pooling at the end; cf. Simonyan & Zisserman, ICLR 2015; Ioffe & Szegedy, ICML 2015;
global average pooling: Lin, Chen, Yan, ICLR 2014), written here at a small size; it is kdlab's own definition,
not a benchmark one.

Parameters: a stage of width w on c input channels has ``9 c w + 2 w`` (conv + BN) ``+ 9 w^2 + 2 w`` parameters,
the classifier ``D K + K`` with D the last width. For one input channel:

* ``audio_cnn`` (32, 64, 128, 256): 9,632 + 55,552 + 221,696 + 885,760 = 1,172,640 in the stages, D = 256
  (1,175,210 with 10 classes);
* ``audio_cnn_small`` (16, 32, 64, 128): 2,512 + 13,952 + 55,552 + 221,696 = 293,712 in the stages, D = 128
  (295,002 with 10 classes);
* ``audio_cnn_tiny`` (8, 16, 32, 64): 680 + 3,520 + 13,952 + 55,552 = 73,704 in the stages, D = 64 (74,354 with
  10 classes, about resnet8's size).

The four stages are the ``stage_modules`` of :class:`~kdlab.models._base.Classifier`, so
:class:`~kdlab.models.multibranch.MultiBranch` can share the first ones between branches.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdlab.models import register
from kdlab.models._base import Classifier, conv_bn, init_conv_bn

WIDTHS = (32, 64, 128, 256)
SMALL_WIDTHS = (16, 32, 64, 128)
TINY_WIDTHS = (8, 16, 32, 64)


class AudioCNN(Classifier):
    """Four stages of two 3x3 conv-BN-ReLU layers at ``widths``, 2x2 max pools between the stages, global average
    pooling and a linear layer."""

    def __init__(self, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 1):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"AudioCNN has 4 stages, got {len(widths)} widths")
        channels = in_channels
        for index, width in enumerate(widths):
            layers: list[nn.Module] = [conv_bn(channels, width, 3), conv_bn(width, width, 3)]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            setattr(self, f"stage{index + 1}", nn.Sequential(*layers))
            channels = width
        self.classifier = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    stage_modules = (("stage1",), ("stage2",), ("stage3",), ("stage4",))

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"stage{index + 1}")(x)


@register("audio_cnn")
def audio_cnn(num_classes: int, in_channels: int = 1) -> AudioCNN:
    """Log-mel CNN with stage widths 32-64-128-256 (1.17 M parameters before the classifier)."""
    return AudioCNN(WIDTHS, num_classes, in_channels)


@register("audio_cnn_small")
def audio_cnn_small(num_classes: int, in_channels: int = 1) -> AudioCNN:
    """Log-mel CNN with stage widths 16-32-64-128 (0.29 M parameters before the classifier)."""
    return AudioCNN(SMALL_WIDTHS, num_classes, in_channels)


@register("audio_cnn_tiny")
def audio_cnn_tiny(num_classes: int, in_channels: int = 1) -> AudioCNN:
    """Log-mel CNN with stage widths 8-16-32-64 (73,704 parameters before the classifier)."""
    return AudioCNN(TINY_WIDTHS, num_classes, in_channels)
