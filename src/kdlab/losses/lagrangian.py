"""Class-adaptive label smoothing, CALS (Liu et al. 2023, "Class Adaptive Network Calibration", CVPR): logit-margin
constraints per class enforced with an augmented Lagrangian (docs/methods/margin_smoothing.md §6.7).

* Constraints, per sample i and class k: h_ik = (max_j z_ij - z_ik - m) / m (``normalise``; m = 20 in the authors'
  config), i.e. "no logit further than m below the largest".
* PHR penalty with a multiplier lambda_k per class and one rho: x = lambda_k + rho h_ik,
  P = (x^2 - lambda_k^2) / (2 rho) where x >= 0, else -lambda_k^2 / (2 rho); dP/dh = max(x, 0).
* Penalty term: sum over classes, mean over samples of P (the authors' code; a mean over N x K would be K times
  smaller).
* Multiplier update (the method, once an epoch, on the validation split): lambda_k = clamp(mean_i clamp(dP/dh_ik,
  lambda_min, lambda_max), lambda_min, lambda_max).

Source: by-liu/CALS ``calibrate/lagrangian/aug_lagrangian_class.py``, ``penalty.py``, ``configs/lag/
aug_lagrangian_class.yaml``, read through the project's code search.
"""

from __future__ import annotations

import torch

from kdlab.losses._precision import upcast


def margin_constraints(logits: torch.Tensor, margin: float, normalise: bool = True) -> torch.Tensor:
    """h_ik = (max_j z_ij - z_ik - m), divided by m when ``normalise``; N x K."""
    z = upcast(logits)
    h = z.max(dim=1, keepdim=True).values - z - margin
    return h / margin if normalise else h


def phr_penalty(h: torch.Tensor, lambd: torch.Tensor, rho: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(h; lambda, rho), dP/dh) elementwise, lambda broadcast over the class axis (last)."""
    x = lambd + rho * h
    active = x >= 0
    value = torch.where(active, (x.square() - lambd.square()) / (2 * rho), -lambd.square() / (2 * rho))
    return value, torch.where(active, x, torch.zeros_like(x))


def cals_penalty(logits: torch.Tensor, lambd: torch.Tensor, rho: torch.Tensor | float, margin: float,
                 normalise: bool = True) -> torch.Tensor:
    """The training term: sum over classes, mean over samples of P(h_ik; lambda_k, rho)."""
    value, _ = phr_penalty(margin_constraints(logits, margin, normalise), lambd, rho)
    return value.sum(dim=1).mean()


def updated_multipliers(logits: torch.Tensor, lambd: torch.Tensor, rho: torch.Tensor | float, margin: float,
                        normalise: bool = True, lambd_min: float = 1e-6, lambd_max: float = 1e6) -> torch.Tensor:
    """The new lambda_k: the mean over samples of the clamped penalty gradient, clamped again."""
    _, grad = phr_penalty(margin_constraints(logits, margin, normalise), lambd, rho)
    return grad.clamp(lambd_min, lambd_max).mean(dim=0).clamp(lambd_min, lambd_max)
