"""Argument checks shared by the losses: each raises a ValueError that names the argument."""

from __future__ import annotations

import math

import torch

from kdlab.losses._precision import upcast


def check_weight(name: str, value: float, *, upper_open: bool = False) -> None:
    """A mixing weight in [0, 1) (``upper_open``) or [0, 1]."""
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_positive(name: str, value: float) -> None:
    """A finite number > 0. A tensor (a learned temperature, positive by construction) is not read back: checking
    it would cost a device-to-host sync every step."""
    if isinstance(value, torch.Tensor):
        return
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def student_teacher_pair(z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes, upcast the student, detach the teacher and cast it to the student's compute dtype."""
    if z.ndim != 2:
        raise ValueError(f"student logits z must be N x K, got shape {tuple(z.shape)}")
    if zt.shape != z.shape:
        raise ValueError(f"teacher logits zt must have the shape of z {tuple(z.shape)}, got {tuple(zt.shape)}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"labels y must have shape ({z.shape[0]},), got {tuple(y.shape)}")
    z = upcast(z)
    return z, zt.detach().to(z.dtype), y.long()
