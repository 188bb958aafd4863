"""Label smoothing regularisation (LSR)."""

from __future__ import annotations

import torch

from kdlab.losses.cross_entropy import soft_cross_entropy
from kdlab.losses.targets import smoothed_labels


def label_smoothing(logits: torch.Tensor, labels: torch.Tensor, eps: float = 0.1, split: str = "uniform") -> torch.Tensor:
    """L_LS = H(q', p) = (1 - eps) H(q, p) + eps H(s, p), batch mean.

    q' is :func:`kdlab.losses.smoothed_labels`: with ``split="uniform"`` the smoothing distribution s is uniform over
    all K classes (Szegedy et al. 2016, Sec. 7; equal to ``torch.nn.CrossEntropyLoss(label_smoothing=eps)``); with
    ``split="others"`` s is uniform over the K - 1 wrong classes (Tf-KD's ``loss_label_smoothing``). ``eps = 0`` is
    plain cross-entropy.
    """
    target = smoothed_labels(labels, logits.shape[1], eps, split)
    return soft_cross_entropy(logits, target)
