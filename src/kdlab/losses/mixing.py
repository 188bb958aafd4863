"""Mixup and CutMix of a batch, and the KD loss on a mixed batch (docs/methods/training_schemes.md §2).

* mixup (Zhang et al. 2018): x~ = lambda x + (1 - lambda) x[perm], lambda ~ Beta(a, a);
* CutMix (Yun et al. 2019): x~ = x with the box B of x[perm] pasted in, B of area (1 - lambda) H W centred at a
  uniform point and clipped to the image; lambda is then the exact kept fraction 1 - |B| / (H W).

The task term is lambda CE(z~, y) + (1 - lambda) CE(z~, y[perm]); the teacher sees x~ as the student does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdlab.losses.cross_entropy import cross_entropy

KINDS = ("mixup", "cutmix")


@dataclass(frozen=True)
class Mix:
    """How one batch is mixed: the partner permutation and lambda (1.0 and the identity: not mixed)."""

    permutation: torch.Tensor
    lam: float
    box: tuple[int, int, int, int] | None = None  # CutMix: top, bottom, left, right (exclusive ends)


def draw_mix(n: int, height: int, width: int, rng: np.random.Generator, kind: str, a: float, rate: float) -> Mix:
    """The mix of a batch of ``n`` images, from ``rng``: with probability 1 - ``rate`` none."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if rng.random() >= rate:
        return Mix(torch.arange(n), 1.0)
    lam = float(rng.beta(a, a))
    permutation = torch.from_numpy(rng.permutation(n))
    if kind == "mixup":
        return Mix(permutation, lam)
    cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    kept = 1 - (bottom - top) * (right - left) / (height * width)
    return Mix(permutation, float(kept), (top, bottom, left, right))


def apply_mix(x: torch.Tensor, mix: Mix) -> torch.Tensor:
    """The mixed batch (N x C x H x W)."""
    if mix.lam == 1.0 and mix.box is None:
        return x
    partner = x[mix.permutation.to(x.device)]
    if mix.box is None:
        return mix.lam * x + (1 - mix.lam) * partner
    top, bottom, left, right = mix.box
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = partner[:, :, top:bottom, left:right]
    return mixed


def mixed_cross_entropy(z: torch.Tensor, y: torch.Tensor, mix: Mix) -> torch.Tensor:
    """lambda CE(z, y) + (1 - lambda) CE(z, y[perm])."""
    if mix.lam == 1.0:
        return cross_entropy(z, y)
    return mix.lam * cross_entropy(z, y) + (1 - mix.lam) * cross_entropy(z, y[mix.permutation.to(y.device)])
