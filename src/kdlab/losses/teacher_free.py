"""Teacher-free regularisers: a hand-made or uniform "virtual teacher" instead of a trained one.

* :func:`tfkd_reg`: Tf-KD_reg (Yuan et al., CVPR 2020), in the paper's form or exactly as the authors' code computes it
  (docs/methods/tfkd.md §2).
* :func:`lsr_os_tc` and its special case :func:`lsr_os`: output smoothing (OS) and teacher correction (TC)
  (Wang et al., Applied Sciences 2021). The paper's equations could not be read; these are the RECONSTRUCTED losses of
  docs/methods/lsr_os_tc.md §1.2, with its open ambiguities as switches.
* :func:`mbls`: margin-based label smoothing (Liu et al., CVPR 2022; docs/methods/margin_smoothing.md §6.6).

Every loss returns the batch mean as a scalar tensor, computes in float32 under autocast and keeps float64 inputs in
float64. KL terms are ``batchmean`` with the tau^2 factor (docs/methods/conventions.md §0.3) unless stated otherwise.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from kdlab.losses._checks import check_non_negative, check_positive, check_weight
from kdlab.losses._precision import upcast
from kdlab.losses.cross_entropy import cross_entropy
from kdlab.losses.divergence import kl_from_probs, kl_to_logits
from kdlab.losses.targets import corrected_uniform_target

TFKD_MODES = ("paper", "reference")


def tfkd_reg(z: torch.Tensor, y: torch.Tensor, alpha: float = 0.1, tau: float = 20.0, a: float = 0.99,
             mode: str = "paper", multiplier: float = 1.0) -> torch.Tensor:
    """Tf-KD_reg, the sum of :func:`tfkd_reg_terms`."""
    terms = tfkd_reg_terms(z, y, alpha, tau, a, mode, multiplier)
    return terms["ce"] + terms["kd"]


def tfkd_reg_terms(z: torch.Tensor, y: torch.Tensor, alpha: float = 0.1, tau: float = 20.0, a: float = 0.99,
                   mode: str = "paper", multiplier: float = 1.0) -> dict[str, torch.Tensor]:
    """Tf-KD_reg as its two weighted terms {"ce": (1 - alpha) CE, "kd": the weighted KL below}: distillation from a
    hand-made teacher p^d (``a`` on the true class, (1-a)/(K-1) elsewhere).

    p^d is :func:`kdlab.losses.targets.corrected_uniform_target` with beta = a (Tf-KD Eq. (8)). Two forms:

    * ``mode="paper"`` (default; Tf-KD Eq. (9) with kdlab's KD conventions, docs/methods/lsr_os_tc.md §1.3 and
      docs/methods/tfkd.md §2.1)::

          (1 - alpha) CE(z, y) + alpha * tau^2 * KL( softmax(log(p^d) / tau) || softmax(z / tau) )     batchmean

      The teacher p^d_tau is p^d softened as a distribution (its log-probabilities are its logits), the student is
      softened with the same tau, and the tau^2 factor is applied. ``multiplier`` is ignored in this mode.
    * ``mode="reference"`` (the authors' code ``loss_kd_regularization`` exactly, docs/methods/tfkd.md §2.2)::

          (1 - alpha) CE(z, y) + alpha * multiplier * KLDivLoss_mean( log_softmax(z), softmax(p^d / tau) )

      ``KLDivLoss_mean`` is ``nn.KLDivLoss()``'s default ``reduction='mean'``, which divides by N*K, i.e. it is the
      batchmean KL divided by K. The softmax is applied to the *probability vector* p^d, the student is not softened
      and there is no tau^2. ``multiplier`` (the repo's ``params.multiplier``, e.g. 100 for ResNet18 on CIFAR-100)
      is only used in this mode. Use it to reproduce the repo's numbers.

    Arguments: 0 <= alpha <= 1, tau > 0, 1/K <= a < 1 (the paper uses a >= 0.9; a = 0.99 on CIFAR-100 and
    ImageNet), mode in ``("paper", "reference")``, multiplier >= 0.
    """
    check_weight("alpha", alpha, upper_open=False)
    check_positive("tau", tau)
    if not 0.0 < a < 1.0:
        raise ValueError(f"Tf-KD hand-made teacher probability a must be in (0, 1), got {a}")
    num_classes = z.shape[1]
    if a < 1.0 / num_classes - 1e-12:
        raise ValueError(
            f"Tf-KD hand-made teacher probability a must be >= 1/K = {1.0 / num_classes:.6g} "
            f"(the teacher must favour the true class), got {a}"
        )
    if mode not in TFKD_MODES:
        raise ValueError(f"Tf-KD mode must be one of {TFKD_MODES}, got {mode!r}")
    check_non_negative("multiplier", multiplier)

    z = upcast(z)
    teacher = corrected_uniform_target(y, num_classes, a, dtype=z.dtype)
    if mode == "paper":
        kd = kl_to_logits(torch.log(teacher), z, tau)
        weight = alpha
    else:
        kd = kl_from_probs(torch.softmax(teacher / tau, dim=1), z, tau=1.0) / num_classes
        weight = alpha * multiplier
    return {"ce": (1.0 - alpha) * cross_entropy(z, y), "kd": weight * kd}


def lsr_os_tc(z: torch.Tensor, y: torch.Tensor, eps: float = 0.1, tau: float = 1.0, beta: float | None = None,
              tau_squared: bool = True, teacher_tau: float | None = None) -> torch.Tensor:
    """LSR-OS-TC, the sum of :func:`lsr_os_tc_terms`."""
    terms = lsr_os_tc_terms(z, y, eps, tau, beta, tau_squared, teacher_tau)
    return terms["ce"] + terms["os"]


def lsr_os_tc_terms(z: torch.Tensor, y: torch.Tensor, eps: float = 0.1, tau: float = 1.0, beta: float | None = None,
                    tau_squared: bool = True, teacher_tau: float | None = None) -> dict[str, torch.Tensor]:
    """LSR-OS-TC as its two weighted terms {"ce": (1 - eps) CE, "os": eps tau^2 KL(t || softmax(z / tau))}: label
    smoothing with output smoothing and teacher correction [RECONSTRUCTED, docs/methods/lsr_os_tc.md §1.2]::

        (1 - eps) CE(z, y) + eps * tau^2 * KL( t || softmax(z / tau) )        batchmean

    t is the corrected uniform teacher t_beta (beta on the true class, (1-beta)/(K-1) elsewhere,
    :func:`kdlab.losses.targets.corrected_uniform_target`); ``beta=None`` means the uniform teacher u (same as
    beta = 1/K), which is LSR-OS (:func:`lsr_os`). With tau = 1 and beta = 1/K the loss is uniform label smoothing
    minus the constant eps*H(u), with the same gradient; at tau = 1, TC only re-parametrises LSR with
    eps_eff = eps*K*(1-beta)/(K-1) (docs/methods/lsr_os_tc.md §1.4), so TC adds something new only for tau > 1.

    The paper could not be read; its three open ambiguities (docs/methods/lsr_os_tc.md §1.2) are handled as follows:

    1. ``tau_squared`` (default True, the Hinton/KD convention): multiply the KL by tau^2. False drops the factor.
    2. ``teacher_tau`` (default None: the teacher t_beta is used as is). A number tau_t > 0 softens the teacher
       Tf-KD-code style as ``softmax(t_beta / tau_t)`` (a softmax of the probability vector,
       docs/methods/lsr_os_tc.md §1.3).
    3. Not a switch: the CE term is on the hard labels, as in Tf-KD Eq. (9).

    Arguments: 0 <= eps < 1, tau > 0, beta None or 1/K <= beta < 1, teacher_tau None or > 0.
    """
    check_weight("eps", eps, upper_open=True)
    check_positive("tau", tau)
    if teacher_tau is not None:
        check_positive("teacher_tau", teacher_tau)
    z = upcast(z)
    num_classes = z.shape[1]
    if beta is None:
        if num_classes < 2:
            raise ValueError(f"LSR-OS needs at least 2 classes, got {num_classes}")
        teacher = torch.full_like(z, 1.0 / num_classes)
    else:
        teacher = corrected_uniform_target(y, num_classes, beta, dtype=z.dtype)
    if teacher_tau is not None:
        teacher = torch.softmax(teacher / teacher_tau, dim=1)
    kd = kl_from_probs(teacher, z, tau)
    if not tau_squared:
        kd = kd / tau**2
    return {"ce": (1.0 - eps) * cross_entropy(z, y), "os": eps * kd}


def lsr_os(z: torch.Tensor, y: torch.Tensor, eps: float = 0.1, tau: float = 1.0) -> torch.Tensor:
    """LSR-OS: label smoothing with a softened output [RECONSTRUCTED, docs/methods/lsr_os_tc.md §1.2]::

        (1 - eps) CE(z, y) + eps * tau^2 * KL( u || softmax(z / tau) )        batchmean, u = 1/K

    :func:`lsr_os_tc` with ``beta=None`` and its defaults (tau^2 on, teacher unsoftened). At tau = 1 it is uniform
    label smoothing minus the constant eps*H(u); for large tau the KL part tends to 0.5 * the per-sample variance of
    the logits over classes (docs/methods/lsr_os_tc.md §1.4).
    """
    return lsr_os_tc(z, y, eps=eps, tau=tau, beta=None)


def lsr_os_terms(z: torch.Tensor, y: torch.Tensor, eps: float = 0.1, tau: float = 1.0) -> dict[str, torch.Tensor]:
    """LSR-OS as its two weighted terms {"ce", "os"} (:func:`lsr_os_tc_terms` with the uniform teacher)."""
    return lsr_os_tc_terms(z, y, eps=eps, tau=tau, beta=None)


def mbls(z: torch.Tensor, y: torch.Tensor, margin: float = 10.0, lam: float = 0.1) -> torch.Tensor:
    """MbLS, the sum of :func:`mbls_terms`."""
    terms = mbls_terms(z, y, margin, lam)
    return terms["ce"] + terms["margin"]


def mbls_terms(z: torch.Tensor, y: torch.Tensor, margin: float = 10.0, lam: float = 0.1) -> dict[str, torch.Tensor]:
    """MbLS as its two terms {"ce": CE, "margin": lam * the mean hinge below}, margin-based label smoothing (Liu et
    al., CVPR 2022; docs/methods/margin_smoothing.md §6.6, code ``logit_margin_l1.py``)::

        CE(z, y) + lam * mean_{i,k} relu( max_j z_ij - z_ik - margin )

    The mean runs over all N*K entries, including the max logit itself (whose distance is 0). Defaults are the
    reference config's: margin 10, lam (``alpha`` there) 0.1. Arguments: margin >= 0, lam >= 0.
    """
    check_non_negative("margin", margin)
    check_non_negative("lam", lam)
    z = upcast(z)
    distance = z.max(dim=1, keepdim=True).values - z
    return {"ce": cross_entropy(z, y), "margin": lam * F.relu(distance - margin).mean()}
