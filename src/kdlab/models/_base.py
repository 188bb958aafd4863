"""Pieces shared by the model families: the classifier base class, weight init, conv-BN-ReLU, channel shuffle."""

from __future__ import annotations

import abc

import torch
import torch.nn as nn


class Classifier(nn.Module, metaclass=abc.ABCMeta):
    """A feature extractor followed by one linear layer, ``self.classifier``.

    Subclasses build ``self.classifier`` (an ``nn.Linear``) and implement :meth:`feature_map`, the last
    convolutional feature map (N x D x H' x W'). Global average pooling of it gives the penultimate activations
    (:meth:`forward_features`, N x D) that enter the classifier; the classifier applied at every position of the
    map gives dense logits (:meth:`dense_logits`, for Zipf's LS votes). :meth:`forward` follows the zoo contract
    of :mod:`kdlab.models`.
    """

    classifier: nn.Linear
    #: Families that can be split into a shared trunk and branches (:mod:`kdlab.models.multibranch`) name the
    #: attributes of each stage here and run stage ``i`` in :meth:`run_stage`; :meth:`feature_map` then runs them
    #: in order.
    stage_modules: tuple[tuple[str, ...], ...] = ()

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is not split into stages")

    @property
    def feature_dim(self) -> int:
        """D, the width of the features that enter ``self.classifier``."""
        return self.classifier.in_features

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (N x D x H' x W') of the batch ``x`` (N x C x H x W), before global pooling.
        Staged families run their stages in order; the others override this."""
        if not self.stage_modules:
            raise TypeError(f"{type(self).__name__} must implement feature_map or stage_modules")
        for index in range(len(self.stage_modules)):
            x = self.run_stage(index, x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations (N x D): the global average of :meth:`feature_map`."""
        return self.feature_map(x).mean(dim=(2, 3))

    def dense_logits(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The classifier applied at every position of ``feature_map``: N x K x H' x W'."""
        return self.classifier(feature_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits (N x K), or ``(logits, features)`` from the same pass when ``return_features`` is true."""
        features = self.forward_features(x)
        logits = self.classifier(features)
        if return_features:
            return logits, features
        return logits


def init_conv_bn(module: nn.Module) -> None:
    """He (Kaiming) normal init with fan-out for every conv in ``module`` (zero conv biases), BN weight 1 and bias 0.

    ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` draws from N(0, 2 / (k * k * out_channels)), which is
    what the reference CIFAR definitions write out by hand as ``normal_(0, sqrt(2 / n))``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    """A bias-free conv with "same" padding, then BN, then (unless ``relu`` is false) ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: view the C channels as a (groups x C/groups) grid and transpose it."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)
