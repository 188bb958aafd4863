"""Cross-entropy against hard labels and against soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._precision import upcast


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """H(q, p) = -log softmax(z)_y, averaged over the batch (q = one-hot label).

    Computed in float32 under autocast (float64 inputs stay float64).
    """
    return F.cross_entropy(upcast(logits), labels.long())


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """H(t, p) = -sum_k t_k log softmax(z)_k, averaged over the batch, for a soft target ``t`` (N x K, rows sum to 1).

    The target carries no gradient.
    """
    log_p = F.log_softmax(upcast(logits), dim=1)
    return -(target.detach().to(log_p.dtype) * log_p).sum(dim=1).mean()
