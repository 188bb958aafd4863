"""Label smoothing regularisation (LSR)."""

from __future__ import annotations

import torch

from kdlab.losses.cross_entropy import cross_entropy, soft_cross_entropy
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


def label_smoothing_terms(logits: torch.Tensor, labels: torch.Tensor, eps: float = 0.1,
                          split: str = "uniform") -> dict[str, torch.Tensor]:
    """L_LS reported as {"ce": (1 - eps) H(q, p), "smoothing": eps H(s, p)}; their sum is :func:`label_smoothing`.

    The loss and its gradient stay the single cross-entropy against the smoothed target that :func:`label_smoothing`
    computes (two separate sums would round differently, and change every LS run's numbers); only its value is
    split: ``ce`` is (1 - eps) H(q, p), computed without gradient, and ``smoothing`` is the rest, which equals
    eps H(s, p) up to float rounding and carries the whole gradient. Sum the terms, as the engine does; do not
    back-propagate one alone.
    """
    total = label_smoothing(logits, labels, eps, split)
    with torch.no_grad():
        task = (1.0 - eps) * cross_entropy(logits, labels)
    return {"ce": task, "smoothing": total - task}
