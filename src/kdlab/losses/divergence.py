"""The divergences every soft-target loss is built from, with kdlab's conventions made explicit.

* KL reduction is ``batchmean``: summed over classes, averaged over the N samples (the true mean KL per sample; what
  RepDistiller, mdistiller, OKDDip and kd_data use). ``torch.nn.KLDivLoss()``'s default ``'mean'`` divides by N*K
  instead; the Tf-KD reference mode asks for that explicitly.
* The ``tau**2`` factor (Hinton et al. 2015) keeps gradient magnitudes comparable across temperatures: the gradient
  of tau^2 KL(t || softmax(z/tau)) with respect to z is tau (softmax(z/tau) - t) per sample
  (docs/methods/lsr_os_tc.md §1.4).
* Targets never carry gradient here: callers that want gradient through a target (online distillation's
  non-detached peers) pass it undetached to :func:`kl_to_logits` with ``detach_target=False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._checks import check_positive
from kdlab.losses._precision import upcast


def kl_from_probs(target: torch.Tensor, logits: torch.Tensor, tau: float = 1.0, detach_target: bool = True) -> torch.Tensor:
    """tau^2 * KL(target || softmax(logits / tau)), batchmean, for a target probability matrix (N x K).

    Zero target entries contribute 0 (the 0 log 0 = 0 convention), so one-hot and smoothed targets both work.
    Computed in float32 (or the input's wider dtype).
    """
    check_positive("tau", tau)
    logits = upcast(logits)
    target = target.detach() if detach_target else target
    target = target.to(logits.dtype)
    log_q = F.log_softmax(logits / tau, dim=1)
    kl = F.kl_div(log_q, target, reduction="sum") / logits.shape[0]
    return kl * tau**2


def kl_to_logits(
    target_logits: torch.Tensor, logits: torch.Tensor, tau: float = 1.0, detach_target: bool = True
) -> torch.Tensor:
    """tau^2 * KL(softmax(target_logits / tau) || softmax(logits / tau)), batchmean (Hinton KD's divergence).

    Uses log-probabilities on both sides (``log_target=True``), which stays exact when a target probability underflows.
    """
    check_positive("tau", tau)
    logits = upcast(logits)
    target_logits = target_logits.detach() if detach_target else target_logits
    log_p = F.log_softmax(target_logits.to(logits.dtype) / tau, dim=1)
    log_q = F.log_softmax(logits / tau, dim=1)
    kl = F.kl_div(log_q, log_p, reduction="sum", log_target=True) / logits.shape[0]
    return kl * tau**2

