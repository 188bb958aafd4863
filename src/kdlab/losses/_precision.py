"""Losses compute in float32 under bf16/fp16 autocast, and keep float64 when given float64 (for exact tests)."""

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()
