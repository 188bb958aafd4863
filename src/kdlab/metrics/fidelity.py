"""Fidelity of a student to its teacher: top-1 agreement and predictive KL (Stanton et al., NeurIPS 2021)."""

from __future__ import annotations

import math

import torch

from kdlab.metrics._inputs import as_logit_pair


def agreement(logits, teacher_logits) -> float:
    """Top-1 agreement (Stanton et al. 2021): mean_i 1[argmax_k z_ik = argmax_k zt_ik].

    Ties are resolved to the first maximal index, in student and teacher alike. Both inputs are N x K logits
    of the same shape (ValueError otherwise).
    """
    z, zt = as_logit_pair(logits, teacher_logits)
    return (z.argmax(dim=1) == zt.argmax(dim=1)).double().mean().item()


def fidelity_kl(logits, teacher_logits, tau: float = 1.0) -> float:
    """Predictive KL (Stanton et al. 2021): mean_i KL(softmax(zt_i/tau) || softmax(z_i/tau)), natural log.

    KL(q || p) = sum_k q_k (log q_k - log p_k), with both log-probabilities from ``log_softmax`` in float64, so
    the terms stay finite for any finite logits (a q_k that underflows to 0 contributes exactly 0). Per-sample
    values are clamped at 0 to remove negative rounding residue. No tau^2 factor: this is a metric, not a loss.
    """
    try:
        tau = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau must be a finite positive number, got {tau!r}") from None
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite positive number, got {tau!r}")
    z, zt = as_logit_pair(logits, teacher_logits)
    log_p = torch.log_softmax(z / tau, dim=1)
    log_q = torch.log_softmax(zt / tau, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1).clamp(min=0)
    return kl.mean().item()


def fidelity_all(logits, teacher_logits) -> dict[str, float]:
    """{"agreement": ..., "fidelity_kl": ...} with tau = 1."""
    return {"agreement": agreement(logits, teacher_logits), "fidelity_kl": fidelity_kl(logits, teacher_logits)}
