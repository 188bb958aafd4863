"""Conversion of metric inputs to float64 / int64 CPU tensors, with shape checks.

Logits are converted straight to float64 (never through float32), so float64 NumPy inputs keep their precision
and float32 / float16 model outputs are widened exactly.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    # ascontiguousarray: torch cannot wrap NumPy views with negative strides (e.g. z[::-1]).
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))


def as_logits(logits, name: str = "logits") -> torch.Tensor:
    """Return ``logits`` as a float64 N x K CPU tensor with N >= 1 and K >= 1, raising ValueError otherwise."""
    z = _as_tensor(logits).detach().to("cpu", torch.float64)
    if z.dim() != 2:
        raise ValueError(f"expected {name} N x K, got shape {tuple(z.shape)}")
    if z.shape[0] == 0:
        raise ValueError("metrics need at least one sample")
    if z.shape[1] == 0:
        raise ValueError(f"{name} need at least one class, got shape {tuple(z.shape)}")
    return z


def as_logits_and_labels(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logits float64 N x K, labels int64 N) on the CPU.

    Raises ValueError on mismatched shapes, on an empty input and on labels outside [0, K).
    """
    z = _as_tensor(logits).detach().to("cpu", torch.float64)
    y = _as_tensor(labels).detach().to("cpu", torch.int64)
    if z.dim() != 2 or y.dim() != 1 or z.shape[0] != y.shape[0]:
        raise ValueError(f"expected logits N x K and labels N, got {tuple(z.shape)} and {tuple(y.shape)}")
    z = as_logits(z)
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in [0, {z.shape[1]}), got range [{int(y.min())}, {int(y.max())}]")
    return z, y


def as_logit_pair(logits, teacher_logits) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (student, teacher) logits as float64 N x K CPU tensors of the same shape, else ValueError."""
    z = as_logits(logits, "logits")
    zt = as_logits(teacher_logits, "teacher logits")
    if z.shape != zt.shape:
        raise ValueError(
            f"logits and teacher logits must have the same shape, got {tuple(z.shape)} and {tuple(zt.shape)}"
        )
    return z, zt
