"""Accuracy and negative log-likelihood."""

from __future__ import annotations

import torch.nn.functional as F

from kdlab.metrics._inputs import as_logits_and_labels


def accuracy(logits, labels) -> float:
    """Top-1 accuracy as a fraction in [0, 1]: mean of 1[argmax_k z_k = y]."""
    z, y = as_logits_and_labels(logits, labels)
    return (z.argmax(dim=1) == y).double().mean().item()


def nll(logits, labels) -> float:
    """Mean negative log-likelihood -log softmax(z)_y (natural log), i.e. the test cross-entropy."""
    z, y = as_logits_and_labels(logits, labels)
    return F.cross_entropy(z.double(), y).item()
