"""Accuracy (top-1 and top-k), negative log-likelihood and the Brier score."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.metrics._inputs import as_logits_and_labels


def accuracy(logits, labels) -> float:
    """Top-1 accuracy as a fraction in [0, 1]: mean of 1[argmax_k z_k = y] (ties: the first maximal index)."""
    z, y = as_logits_and_labels(logits, labels)
    return (z.argmax(dim=1) == y).double().mean().item()


def topk_accuracy(logits, labels, k: int = 5) -> float:
    """Top-k accuracy: mean of 1[y is among the indices of the k largest logits].

    The k indices are those returned by ``torch.topk`` (so ties at the k-th place are broken as torch.topk
    breaks them). ``k`` is clamped to the number of classes K, so k >= K gives 1.0. Computed directly; the
    tests check equality with ``torchmetrics.functional.classification.multiclass_accuracy(logits, y,
    num_classes=K, top_k=k, average="micro")``, which also selects the k indices with ``torch.topk``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    z, y = as_logits_and_labels(logits, labels)
    top = z.topk(min(k, z.shape[1]), dim=1).indices
    return (top == y.unsqueeze(1)).any(dim=1).double().mean().item()


def nll(logits, labels) -> float:
    """Mean negative log-likelihood -log softmax(z)_y (natural log), i.e. the test cross-entropy."""
    z, y = as_logits_and_labels(logits, labels)
    return F.cross_entropy(z, y).item()


def brier(logits, labels) -> float:
    """Multi-class Brier score (Brier 1950): mean_i sum_k (softmax(z_i)_k - 1[y_i = k])^2, in [0, 2].

    This is the sum over classes, not the mean over classes (some libraries divide by K).
    """
    z, y = as_logits_and_labels(logits, labels)
    p = torch.softmax(z, dim=1)
    onehot = F.one_hot(y, z.shape[1]).to(p.dtype)
    return (p - onehot).pow(2).sum(dim=1).mean().item()
