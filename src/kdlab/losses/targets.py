"""Soft targets: the probability vectors that the smoothing and distillation losses pull the student towards.

Each builder returns an (N x K) float tensor whose rows sum to 1 and carries no gradient.
"""

from __future__ import annotations

import torch

SMOOTHING_SPLITS = ("uniform", "others")


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q(k) = 1 if k = y else 0, as an (N x K) tensor."""
    target = torch.zeros(labels.shape[0], num_classes, dtype=dtype, device=labels.device)
    return target.scatter_(1, labels.long().unsqueeze(1), 1.0)


def smoothed_labels(
    labels: torch.Tensor, num_classes: int, eps: float, split: str = "uniform", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The label-smoothing target q' for smoothing mass ``eps`` in [0, 1).

    * ``split="uniform"`` (Szegedy et al. 2016; Mueller et al. 2019; ``torch.nn.CrossEntropyLoss(label_smoothing)``):
      q'(k) = (1 - eps) q(k) + eps / K, so the true class gets 1 - eps + eps/K.
    * ``split="others"`` (the Tf-KD and Zipf-LS reference code): 1 - eps on the true class, eps / (K - 1) on each of
      the other K - 1 classes.
    """
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label smoothing eps must be in [0, 1), got {eps}")
    if split not in SMOOTHING_SPLITS:
        raise ValueError(f"label smoothing split must be one of {SMOOTHING_SPLITS}, got {split!r}")
    if num_classes < 2:
        raise ValueError(f"label smoothing needs at least 2 classes, got {num_classes}")
    q = one_hot(labels, num_classes, dtype)
    if split == "uniform":
        return q * (1.0 - eps) + eps / num_classes
    return q * (1.0 - eps) + (1.0 - q) * (eps / (num_classes - 1))

