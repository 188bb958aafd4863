"""Conversion of metric inputs to float32 / int64 CPU tensors, with shape checks."""

from __future__ import annotations

import numpy as np
import torch


def as_logits_and_labels(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logits float32 N x K, labels int64 N) on the CPU, raising ValueError on mismatched shapes."""
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    z = z.detach().to("cpu", torch.float32)
    y = y.detach().to("cpu", torch.int64)
    if z.dim() != 2 or y.dim() != 1 or z.shape[0] != y.shape[0]:
        raise ValueError(f"expected logits N x K and labels N, got {tuple(z.shape)} and {tuple(y.shape)}")
    if z.shape[0] == 0:
        raise ValueError("metrics need at least one sample")
    return z, y
