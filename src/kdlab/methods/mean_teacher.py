"""``mean_teacher``: the student's exponential moving average as its own teacher (Tarvainen & Valpola 2017,
"Mean teachers are better role models"; docs/methods/training_schemes.md §3)."""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from kdlab import losses
from kdlab.losses._precision import upcast
from kdlab.methods import register
from kdlab.methods.base import Method


def ramp_up(epoch: int, ramp_epochs: int) -> float:
    """The paper's sigmoid ramp-up exp(-5 (1 - t)^2), t = epoch / ramp_epochs clipped to [0, 1] (1 without ramp)."""
    if ramp_epochs <= 0:
        return 1.0
    t = min(1.0, max(0.0, epoch / ramp_epochs))
    return math.exp(-5.0 * (1.0 - t) ** 2)


@register("mean_teacher")
class MeanTeacher(Method):
    """L = CE(z, y) + w(epoch) C(z, z^ema), terms ``ce`` and ``consistency``. The teacher's weights are
    theta' <- decay theta' + (1 - decay) theta, updated from the student's current weights at the start of each
    training step (so it lags the student by one step; BatchNorm statistics are copied), and it runs in eval mode
    without gradient. C is ``mse``: mean over N x K of (softmax(z) - softmax(z^ema))^2 (the paper's consistency
    cost), or ``kl``: tau^2 KL(softmax(z^ema / tau) || softmax(z / tau)). w = weight x ramp_up(epoch). The averaged
    network is part of the method's checkpointed state (resumed exactly), not of the exported model. With decay 0
    the teacher is the student of the previous step: a Tf-KD-self teacher that is always the latest weights."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        decay: float = Field(0.999, ge=0, lt=1, description="EMA decay of the teacher's weights")
        consistency: Literal["mse", "kl"] = Field("mse", description="mse of probabilities (the paper) or tau^2 KL")
        weight: float = Field(1.0, ge=0, description="largest weight of the consistency term")
        ramp_epochs: int = Field(0, ge=0, description="sigmoid ramp-up of the weight over this many epochs (0: none)")
        tau: float = Field(1.0, gt=0, description="temperature of the kl consistency")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        self.ema = copy.deepcopy(model)
        self.ema.requires_grad_(False)
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))  # checkpointed: resumes keep averaging

    @torch.no_grad()
    def update_teacher(self) -> None:
        """theta' <- decay theta' + (1 - decay) theta; buffers copied."""
        decay = self.params.decay if bool(self.started) else 0.0  # the first step starts from the student itself
        for averaged, current in zip(self.ema.parameters(), self.model.parameters()):
            averaged.mul_(decay).add_(current.detach(), alpha=1 - decay)
        for averaged, current in zip(self.ema.buffers(), self.model.buffers()):
            averaged.copy_(current)
        self.started.fill_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.ema.eval()
        return self

    def forward(self, inputs, labels, epoch, keys=None):
        p = self.params
        if self.training:
            self.update_teacher()
        logits = self.model(inputs)
        with torch.no_grad():
            teacher = self.ema(inputs)
        if p.consistency == "mse":
            consistency = (torch.softmax(upcast(logits), 1) - torch.softmax(upcast(teacher), 1)).pow(2).mean()
        else:
            consistency = losses.divergence(logits, teacher, "kl", p.tau)
        return logits, {"ce": losses.cross_entropy(logits, labels),
                        "consistency": p.weight * ramp_up(epoch, p.ramp_epochs) * consistency}
