"""Offline knowledge-distillation losses of student logits ``z`` towards teacher logits ``zt`` (METHODS.md section 4).

Each loss is ``(1 - alpha) * CE(z, y) + alpha * term(z, zt)`` (mixed by one helper, :func:`_mix`), returned as the
batch mean, a scalar tensor. The teacher ``zt`` is detached: it never receives gradient. Everything is computed in
float32 under bf16/fp16 autocast and in float64 when the student logits are float64; the teacher is cast to the
student's compute dtype.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from kdlab.losses._checks import check_positive, check_weight, student_teacher_pair
from kdlab.losses.cross_entropy import cross_entropy
from kdlab.losses.divergence import kl_to_logits


def _mix(z: torch.Tensor, y: torch.Tensor, alpha: float, term: torch.Tensor) -> torch.Tensor:
    """(1 - alpha) * CE(z, y) + alpha * term: the hard-label / soft-target mixture shared by every KD loss here."""
    return (1.0 - alpha) * cross_entropy(z, y) + alpha * term


def kd_kl(z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float = 0.9, tau: float = 4.0) -> torch.Tensor:
    """Hinton KD: L = (1 - alpha) CE(z, y) + alpha tau^2 KL(softmax(zt / tau) || softmax(z / tau)), KL batchmean.

    Source: Hinton, Vinyals & Dean 2015; METHODS.md 4.1. The defaults (0.1 CE + 0.9 KD at tau = 4) are RepDistiller's
    ``-r 0.1 -a 0.9 --kd_T 4`` and mdistiller's CIFAR ``KD`` config. Gradient per sample (divided by N in the batch
    mean): dL/dz = (1 - alpha)(softmax(z) - onehot(y)) + alpha tau (softmax(z / tau) - softmax(zt / tau)).
    ``alpha = 0`` is plain cross-entropy. The teacher is detached.
    """
    check_weight("alpha", alpha)
    check_positive("tau", tau)
    z, zt, y = student_teacher_pair(z, zt, y)
    return _mix(z, y, alpha, kl_to_logits(zt, z, tau))


def kd_mse(z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Logit matching: L = (1 - alpha) CE(z, y) + alpha * mean_{n,k} (z_nk - zt_nk)^2.

    Source: Kim et al., IJCAI 2021, code jhoon-oh/kd_data ``--logit l2_logit``: ``nn.MSELoss()(z, zt)``, the mean over
    all N*K elements (the paper's ||z - zt||^2 divided by K per sample), with no CE term, i.e. the default
    ``alpha = 1`` (METHODS.md 4.2). At ``alpha = 1`` this equals ``F.mse_loss(z, zt)``. The teacher is detached.
    """
    check_weight("alpha", alpha)
    z, zt, y = student_teacher_pair(z, zt, y)
    return _mix(z, y, alpha, F.mse_loss(z, zt))


def kd_reverse_kl(
    z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float = 0.9, tau: float = 4.0
) -> torch.Tensor:
    """Reverse-KL KD: L = (1 - alpha) CE(z, y) + alpha tau^2 KL(softmax(z / tau) || softmax(zt / tau)), KL batchmean.

    The mode-seeking direction of the KD divergence (the "reverse KL" half of BD-KD, METHODS.md 6.8; the weights and
    tau^2 factor follow Hinton KD, METHODS.md 4.1). The student appears in both places of the KL (the weighting
    distribution and its log), and gradient flows through both; the teacher is detached.
    """
    check_weight("alpha", alpha)
    check_positive("tau", tau)
    z, zt, y = student_teacher_pair(z, zt, y)
    return _mix(z, y, alpha, kl_to_logits(z, zt, tau, detach_target=False))
