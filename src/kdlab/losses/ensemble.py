"""Distillation from several teachers (docs/methods/training_schemes.md §1).

The teachers' logits z^t_1..z^t_M (each N x K) are combined into one target, then the student is distilled from it
with tau^2 KL at temperature tau (batchmean):

* ``logits``: the target is softmax(mean_m z^t_m / tau) (ensemble of logits, as in Hinton et al. 2015's ensembles);
* ``probs``: the target is mean_m softmax(z^t_m / tau) (ensemble of probabilities; You et al. 2017 average the
  teachers' soft outputs);
* ``confidence``: per sample, teacher m gets weight w_m = softmax_m(-CE(z^t_m, y)) (a teacher that is surer of the
  true class counts more; the weighting of Zhang et al. 2022, CA-MKD, without its feature part), and the target is
  sum_m w_m softmax(z^t_m / tau).

With one teacher every rule is ordinary KD (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._precision import upcast
from kdlab.losses.divergence import kl_from_probs

COMBINATIONS = ("logits", "probs", "confidence")


def ensemble_target(teacher_logits: list[torch.Tensor], labels: torch.Tensor, tau: float,
                    combine: str = "logits") -> torch.Tensor:
    """The combined teacher distribution at temperature ``tau`` (N x K)."""
    stacked = torch.stack([upcast(z) for z in teacher_logits])  # M x N x K
    if combine == "logits":
        return F.softmax(stacked.mean(0) / tau, dim=1)
    probabilities = F.softmax(stacked / tau, dim=2)
    if combine == "probs":
        return probabilities.mean(0)
    if combine == "confidence":
        ce = -F.log_softmax(stacked, dim=2).gather(2, labels.view(1, -1, 1).expand(len(stacked), -1, 1)).squeeze(2)
        weights = F.softmax(-ce, dim=0)  # M x N
        return (weights.unsqueeze(2) * probabilities).sum(0)
    raise ValueError(f"combine must be one of {COMBINATIONS}, got {combine!r}")


def ensemble_kd(z: torch.Tensor, teacher_logits: list[torch.Tensor], labels: torch.Tensor, tau: float = 4.0,
                combine: str = "logits") -> torch.Tensor:
    """tau^2 KL(ensemble target || softmax(z / tau)), batchmean."""
    return kl_from_probs(ensemble_target(teacher_logits, labels, tau, combine), z, tau)
