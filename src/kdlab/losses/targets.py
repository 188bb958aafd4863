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


def corrected_uniform_target(
    labels: torch.Tensor, num_classes: int, beta: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A uniform teacher whose true class gets the share ``beta``: t_beta(k) = beta if k = y, (1 - beta)/(K - 1) else.

    Requires 1/K <= beta < 1 (beta = 1/K gives the uniform distribution u exactly; beta -> 1 would be one-hot). Two
    losses build their teacher with it:

    * LSR-OS-TC's "teacher correction" t_beta (docs/methods/lsr_os_tc.md §1.2, RECONSTRUCTED), used by
      :func:`kdlab.losses.teacher_free.lsr_os_tc`.
    * Tf-KD_reg's hand-made teacher p^d, with ``beta = a`` (a = 0.99 in the paper and code; docs/methods/tfkd.md §2.1
      Eq. (8) and 2.2), used by :func:`kdlab.losses.teacher_free.tfkd_reg`.

    It is the same vector as ``smoothed_labels(labels, K, 1 - beta, split="others")``.
    """
    if num_classes < 2:
        raise ValueError(f"corrected uniform target needs at least 2 classes, got num_classes={num_classes}")
    # A small tolerance so that beta = 1 / K computed by the caller is accepted whatever its rounding.
    if not (1.0 / num_classes - 1e-12 <= beta < 1.0):
        raise ValueError(f"corrected uniform target beta must be in [1/K, 1) = [{1 / num_classes:.6g}, 1), got {beta}")
    q = one_hot(labels, num_classes, dtype)
    return q * beta + (1.0 - q) * ((1.0 - beta) / (num_classes - 1))
