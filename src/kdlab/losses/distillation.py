"""Offline knowledge-distillation losses of student logits ``z`` towards teacher logits ``zt`` (docs/methods/kd.md §4).

Each loss is ``(1 - alpha) * CE(z, y) + alpha * D(z, zt)``, the sum of the two weighted terms of :func:`kd_terms`
(the one place where they are mixed), returned as the batch mean, a scalar tensor. The teacher ``zt`` is detached: it
never receives gradient. Everything is computed in
float32 under bf16/fp16 autocast and in float64 when the student logits are float64; the teacher is cast to the
student's compute dtype.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from kdlab.losses._checks import check_positive, check_weight, student_teacher_pair
from kdlab.losses.cross_entropy import cross_entropy
from kdlab.losses.divergence import kl_to_logits


DIVERGENCES = ("kl", "reverse_kl", "mse")


def divergence(z: torch.Tensor, zt: torch.Tensor, kind: str = "kl", tau: float = 4.0) -> torch.Tensor:
    """The unweighted soft-target term D(z, zt) of KD, for student ``z`` and (detached) teacher ``zt``:

    * ``kl``: tau^2 KL(softmax(zt / tau) || softmax(z / tau)), batchmean (Hinton et al. 2015);
    * ``reverse_kl``: tau^2 KL(softmax(z / tau) || softmax(zt / tau)), batchmean, gradient through both places of z;
    * ``mse``: mean over all N*K entries of (z - zt)^2 (Kim et al. 2021's ``nn.MSELoss()``); tau is unused.
    """
    if kind == "kl":
        return kl_to_logits(zt, z, tau)
    if kind == "reverse_kl":
        return kl_to_logits(z, zt, tau, detach_target=False)
    if kind == "mse":
        return F.mse_loss(z, zt)
    raise ValueError(f"KD divergence must be one of {DIVERGENCES}, got {kind!r}")


def kd_terms(z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float = 0.9, tau: float = 4.0,
             kind: str = "kl") -> dict[str, torch.Tensor]:
    """The two weighted terms of KD, {"ce": (1 - alpha) CE(z, y), "kd": alpha D(z, zt)} (D is :func:`divergence`);
    their sum is the loss. Arguments are checked as in :func:`kd_kl`."""
    check_weight("alpha", alpha)
    if kind != "mse":
        check_positive("tau", tau)
    zs, zt, y = student_teacher_pair(z, zt, y)
    # Each term upcasts the student's logits itself: under bf16 autocast each term's gradient is then rounded to the
    # logits' dtype on its own, as kdlab's KD runs have always computed it (the values are the same either way).
    return {"ce": (1.0 - alpha) * cross_entropy(z, y), "kd": alpha * divergence(zs, zt, kind, tau)}


def _total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return terms["ce"] + terms["kd"]


def kd_kl(z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float = 0.9, tau: float = 4.0) -> torch.Tensor:
    """Hinton KD: L = (1 - alpha) CE(z, y) + alpha tau^2 KL(softmax(zt / tau) || softmax(z / tau)), KL batchmean.

    Source: Hinton, Vinyals & Dean 2015; docs/methods/kd.md §4.1. The defaults (0.1 CE + 0.9 KD at tau = 4) are
    RepDistiller's
    ``-r 0.1 -a 0.9 --kd_T 4`` and mdistiller's CIFAR ``KD`` config. Gradient per sample (divided by N in the batch
    mean): dL/dz = (1 - alpha)(softmax(z) - onehot(y)) + alpha tau (softmax(z / tau) - softmax(zt / tau)).
    ``alpha = 0`` is plain cross-entropy. The teacher is detached.
    """
    return _total(kd_terms(z, zt, y, alpha, tau, "kl"))


def kd_mse(z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Logit matching: L = (1 - alpha) CE(z, y) + alpha * mean_{n,k} (z_nk - zt_nk)^2.

    Source: Kim et al., IJCAI 2021, code jhoon-oh/kd_data ``--logit l2_logit``: ``nn.MSELoss()(z, zt)``, the mean over
    all N*K elements (the paper's ||z - zt||^2 divided by K per sample), with no CE term, i.e. the default
    ``alpha = 1`` (docs/methods/kd.md §4.2). At ``alpha = 1`` this equals ``F.mse_loss(z, zt)``. The teacher is
    detached.
    """
    return _total(kd_terms(z, zt, y, alpha, kind="mse"))


def kd_reverse_kl(
    z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float = 0.9, tau: float = 4.0
) -> torch.Tensor:
    """Reverse-KL KD: L = (1 - alpha) CE(z, y) + alpha tau^2 KL(softmax(z / tau) || softmax(zt / tau)), KL batchmean.

    The mode-seeking direction of the KD divergence (the "reverse KL" half of BD-KD, docs/methods/bdkd.md §6.8; the
    weights and
    tau^2 factor follow Hinton KD, docs/methods/kd.md §4.1). The student appears in both places of the KL (the weighting
    distribution and its log), and gradient flows through both; the teacher is detached.
    """
    return _total(kd_terms(z, zt, y, alpha, tau, "reverse_kl"))
