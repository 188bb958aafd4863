"""Decoupled knowledge distillation (DKD; Zhao et al., CVPR 2022), docs/methods/dkd.md §6.9.

Semantics follow megvii-research/mdistiller ``mdistiller/distillers/DKD.py`` (``dkd_loss``), written independently:

* p^s = softmax(z / tau), p^t = softmax(zt / tau); the binary split b = [p_y, 1 - p_y] (target vs the rest).
* TCKD = tau^2 KL(b^t || b^s), summed over the two bins and averaged over the batch.
* NCKD = tau^2 KL(p_hat^t || p_hat^s), where p_hat = softmax(. / tau) over the K - 1 non-target logits only,
  averaged over the batch.

Two implementation differences from mdistiller, equal in value wherever mdistiller is finite:

* NCKD masks the target class **exactly** (the K - 1 non-target logits are gathered) instead of subtracting 1000 from
  the target's logit / tau before a K-way softmax.
* TCKD is computed from log-probabilities: the binary logits [z_y / tau, logsumexp_{k != y} z_k / tau] have softmax
  exactly [p_y, 1 - p_y], so no probability is logged after it underflows (mdistiller takes ``torch.log`` of it).

Both terms reuse :func:`kdlab.losses.divergence.kl_to_logits`. Identity (checked in the tests), per sample:
tau^2 KL(p^t || p^s) = TCKD + (1 - p^t_y) NCKD.
"""

from __future__ import annotations

import math

import torch

from kdlab.losses._checks import check_positive, student_teacher_pair
from kdlab.losses.divergence import kl_to_logits


def _non_target(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The (N x K-1) non-target logits of each row, in class order (a gather: no host sync, gradient flows)."""
    n, k = logits.shape
    cols = torch.arange(k - 1, device=logits.device).expand(n, k - 1)
    cols = cols + (cols >= y.unsqueeze(1)).long()
    return logits.gather(1, cols)


def _binary_logits(logits: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """(N x 2) logits whose softmax is [p_y, 1 - p_y] for p = softmax(logits / tau)."""
    scaled = logits / tau
    target = scaled.gather(1, y.unsqueeze(1))
    rest = torch.logsumexp(_non_target(scaled, y), dim=1, keepdim=True)
    return torch.cat([target, rest], dim=1)


def dkd_parts(
    z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, tau: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD) of DKD, each a batch-mean scalar (see the module docstring for the formulas).

    TCKD = tau^2 KL([p^t_y, 1 - p^t_y] || [p^s_y, 1 - p^s_y]); NCKD = tau^2 KL(p_hat^t || p_hat^s) over the
    non-target classes. The teacher is detached; float32 under autocast, float64 kept for float64 inputs.
    """
    check_positive("tau", tau)
    z, zt, y = student_teacher_pair(z, zt, y)
    if z.shape[1] < 2:
        raise ValueError(f"DKD needs at least 2 classes in z, got shape {tuple(z.shape)}")
    tckd = kl_to_logits(_binary_logits(zt, y, tau), _binary_logits(z, y, tau), 1.0) * tau**2
    nckd = kl_to_logits(_non_target(zt, y), _non_target(z, y), tau)
    return tckd, nckd


def dkd(
    z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float = 1.0, beta: float = 8.0, tau: float = 4.0
) -> torch.Tensor:
    """DKD loss: alpha * TCKD + beta * NCKD, batch mean (mdistiller ``dkd_loss``; docs/methods/dkd.md §6.9).

    Defaults are mdistiller's CIFAR-100 res32x4 -> res8x4 config (alpha 1, beta 8, T 4); beta is 2 or 6 for other
    pairs (docs/methods/dkd.md §6.9 table). The method's full loss, CE + min(epoch / warmup, 1) * dkd(...), adds the
    cross-entropy and the warm-up outside this function. ``alpha`` and ``beta`` are non-negative weights.
    """
    for name, weight in (("alpha", alpha), ("beta", beta)):
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"DKD weight {name} must be a finite number >= 0, got {weight!r}")
    tckd, nckd = dkd_parts(z, zt, y, tau)
    return alpha * tckd + beta * nckd
