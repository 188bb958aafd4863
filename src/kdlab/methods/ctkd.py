"""``ctkd``: curriculum temperature for KD (Li et al. 2023, "Curriculum Temperature for Knowledge Distillation", AAAI):
the KD temperature is a learned parameter trained *adversarially* (through a gradient reversal layer) to make the
distillation loss larger, with the reversal's strength rising from 0 to 1 over the first epochs: an easy-to-hard
curriculum (docs/methods/training_schemes.md §5)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from pydantic import Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.with_teacher import TeacherParams, WithTeacher


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """The identity forward; backward multiplies the gradient by -``strength`` (Ganin & Lempitsky 2015)."""
    return _ReverseGradient.apply(x, strength)


def curriculum_strength(epoch: int, ramp_epochs: int, largest: float = 1.0) -> float:
    """lambda at 0-based ``epoch``: largest (1 - cos(pi min(epoch + 1, E) / E)) / 2, rising from ~0 to ``largest``
    over E = ``ramp_epochs`` epochs (CTKD's CosineDecay with decay_max 0, decay_min -1, decay_loops E, given the
    1-based epoch, read as the magnitude of the reversal); E = 0: ``largest`` throughout."""
    if ramp_epochs <= 0:
        return largest
    step = min(epoch + 1, ramp_epochs)
    return largest * 0.5 * (1.0 - math.cos(math.pi * step / ramp_epochs))


class GlobalTemperature(nn.Module):
    """One learned scalar theta; tau = t_min + t_range sigmoid(theta), so tau stays in (t_min, t_min + t_range)."""

    def __init__(self, t_min: float, t_range: float, init: float):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(init)))
        self.t_min, self.t_range = t_min, t_range

    def forward(self, strength: float) -> torch.Tensor:
        return self.t_min + self.t_range * torch.sigmoid(reverse_gradient(self.theta, strength))

    @torch.no_grad()
    def value(self) -> float:
        """The temperature now."""
        return float(self(0.0))


@register("ctkd")
class CurriculumTemperature(WithTeacher):
    """L = gamma CE(z, y) + alpha tau^2 KL(softmax(z^t / tau) || softmax(z / tau)) (batchmean; terms ``ce``, ``kd``),
    tau = t_min + t_range sigmoid(theta) from :class:`GlobalTemperature`. The student descends L; theta, through the
    reversal, *ascends* it with strength lambda(epoch) (:func:`curriculum_strength`), so the temperature moves to
    where the student's task is hardest, more so as training goes on. theta belongs to the method (stepped by the
    optimizer with the student, checkpointed, not exported). Defaults: the authors' CIFAR-100 script (gamma 0.1,
    alpha 0.9, t_start 1, t_end 20 as t_min and t_range, theta initialised to 1, i.e. tau ~ 15.6 at the start,
    decay_loops 10); their global (not instance-wise) temperature. The temperature reached is logged as
    ``method_tau`` and ``method_lambda``."""

    class Params(TeacherParams):
        gamma: float = Field(0.1, ge=0, description="weight of the cross-entropy term")
        alpha: float = Field(0.9, ge=0, description="weight of the distillation term")
        t_min: float = Field(1.0, gt=0, description="lowest temperature (t_start)")
        t_range: float = Field(20.0, gt=0, description="temperature span above t_min (t_end)")
        init: float = Field(1.0, description="initial theta")
        ramp_epochs: int = Field(10, ge=0, description="epochs over which the reversal strength rises to its peak")
        max_strength: float = Field(1.0, ge=0, description="the reversal's final strength (lambda_max)")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        self.temperature = GlobalTemperature(params.t_min, params.t_range, params.init)
        self._strength = curriculum_strength(0, params.ramp_epochs, params.max_strength)

    def forward(self, inputs, labels, epoch, keys=None):
        p = self.params
        logits = self.model(inputs)
        self._strength = curriculum_strength(epoch, p.ramp_epochs, p.max_strength)
        tau = self.temperature(self._strength)
        kd = losses.kl_to_logits(self.teacher(inputs, keys), logits, tau)
        return logits, {"ce": p.gamma * losses.cross_entropy(logits, labels), "kd": p.alpha * kd}

    def epoch_log(self):
        return {"tau": self.temperature.value(), "lambda": self._strength}
