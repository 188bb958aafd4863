"""``airnet``: a shallow, wide CIFAR net built for time to accuracy, after Keller Jordan's airbench speedruns
(K. Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv:2404.00498, 2024; notes in
``docs/speedrun.md``).

Layout (input 32x32): a 2x2 convolution without padding whose 2 C k^2 filters are fixed from the training data
(:meth:`AirNet.fit_to_data`, the patch-whitening init), GELU, then three conv groups of ``widths`` channels, each
conv 3x3 -> max pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU, a global max pool, and a linear classifier without
bias. The published choices kept here, each an argument:

* whitening init: the filters are the eigenvectors of the (uncentred) covariance of the k x k input patches, scaled
  by 1 / sqrt(eigenvalue + 5e-4), each with its negative; they are not trained (their bias is);
* identity (Dirac) init: the first ``in`` filters of every 3x3 conv pass their input channel through;
* BatchNorm with fixed scale 1 (only the shift trains), eps 1e-12, running-statistics momentum 0.4 (airbench's
  "0.6" is the weight of the old value);
* features scaled by 1/9 before the classifier (airbench scales the logits; scaling the features instead keeps
  ``logits = classifier(features)``, the zoo contract);
* test-time augmentation in eval mode (``tta``): 0 none, 1 the mean over the image and its mirror, 2 half that plus
  a quarter each of the same for the image shifted by one pixel up-left and down-right (reflect padding). The
  averaging is done on the features, which the linear classifier turns into the mean of the views' logits.

airbench93's published setting (widths 64-128-128, 11 epochs, batch 1024, label smoothing 0.2, Nesterov SGD,
BN-bias lr x 64, triangular lr) reaches 93.0% on CIFAR-10 on a GPU; its lookahead averaging and alternating flips
are not reproduced here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdlab.models import register
from kdlab.models._base import Classifier

WHITENING_EPS = 5e-4


class _ShiftOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale is fixed at 1: only the shift (bias) is trained."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """conv 3x3 -> max pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = _ShiftOnlyBatchNorm(out_channels, bn_momentum)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _ShiftOnlyBatchNorm(out_channels, bn_momentum)
        for conv in (self.conv1, self.conv2):
            with torch.no_grad():
                nn.init.dirac_(conv.weight[: min(conv.in_channels, conv.out_channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirNet(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (64, 128, 128),
                 whiten_kernel: int = 2, tta: int = 2, bn_momentum: float = 0.4, feature_scale: float = 1 / 9):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {list(widths)}")
        if tta not in (0, 1, 2):
            raise ValueError(f"tta must be 0, 1 or 2, got {tta}")
        if whiten_kernel < 1:
            raise ValueError(f"whiten_kernel must be >= 1, got {whiten_kernel}")
        self.tta = tta
        self.feature_scale = feature_scale
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * whiten_kernel ** 2, whiten_kernel, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        channels = [self.whiten.out_channels, *widths]
        self.groups = nn.Sequential(*(ConvGroup(a, b, bn_momentum) for a, b in zip(channels, channels[1:])))
        self.classifier = nn.Linear(widths[-1], num_classes, bias=False)

    @torch.no_grad()
    def fit_to_data(self, inputs: torch.Tensor) -> None:
        """Set the whitening filters from training inputs (N x C x H x W, normalised as in training): the
        eigenvectors v_i of the k x k patches' second-moment matrix, scaled by 1 / sqrt(lambda_i + eps), largest
        first, then their negatives."""
        k = self.whiten.kernel_size[0]
        c = self.whiten.in_channels
        patches = inputs.detach().to("cpu", torch.float64).unfold(2, k, 1).unfold(3, k, 1)  # N C H' W' k k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        moment = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(moment)  # ascending
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + WHITENING_EPS)[:, None]).flip(0).reshape(-1, c, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.groups(F.gelu(self.whiten(x)))

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).amax(dim=(2, 3)) * self.feature_scale

    def _mirrored(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self._pooled(x) + self._pooled(x.flip(-1)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.tta == 0:
            return self._pooled(x)
        features = self._mirrored(x)
        if self.tta == 1:
            return features
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :h, :w], padded[..., 2:, 2:]]
        return 0.5 * features + 0.25 * sum(self._mirrored(view) for view in shifted)

    def dense_logits(self, feature_map: torch.Tensor) -> torch.Tensor:
        return super().dense_logits(feature_map * self.feature_scale)


@register("airnet")
def airnet(num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (64, 128, 128), whiten_kernel: int = 2,
           tta: int = 2, bn_momentum: float = 0.4, feature_scale: float = 1 / 9) -> AirNet:
    """airbench93's shape by default (widths 64-128-128); ``widths: [64, 256, 256]`` is airbench94's."""
    return AirNet(num_classes, in_channels, widths, whiten_kernel, tta, bn_momentum, feature_scale)
