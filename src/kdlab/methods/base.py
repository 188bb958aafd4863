"""The method interface the engine trains.

A method is an ``nn.Module`` that owns what it trains (``self.model``, the network that is evaluated and exported)
and returns, for a batch, the logits of that model and a dict of named loss terms whose sum is minimised. The engine
never knows which method runs: it sums the terms, logs each one, and evaluates ``method.model``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Method(nn.Module, ABC):
    """Base class: subclasses set ``Params`` (a pydantic model with defaults) and implement ``forward``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, model: nn.Module, params: BaseModel, num_classes: int):
        super().__init__()
        self.model = model
        self.params = params
        self.num_classes = num_classes

    @abstractmethod
    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (logits of ``self.model`` for ``inputs``, {term name: scalar loss})."""
