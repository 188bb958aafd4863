"""``kd_annealed``: KD whose weight alpha and temperature tau follow a schedule over the run
(docs/methods/training_schemes.md §4)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.methods import register
from kdlab.methods.with_teacher import TeacherParams, WithTeacher

SHAPES = ("linear", "cosine", "step")


def anneal(start: float, end: float, epoch: int, epochs: int, shape: str = "linear") -> float:
    """The value at 0-based ``epoch`` of a schedule from ``start`` (first epoch) to ``end`` (last epoch), progress
    t = epoch / (epochs - 1): linear start + (end - start) t; cosine end + (start - end)(1 + cos(pi t)) / 2; step
    start for the first half of the run, end for the second (t >= 0.5). One epoch: the start value."""
    t = min(max(epoch / (epochs - 1), 0.0), 1.0) if epochs > 1 else 0.0
    if shape == "linear":
        return start + (end - start) * t
    if shape == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))
    if shape == "step":
        return start if t < 0.5 else end
    raise ValueError(f"schedule shape must be one of {SHAPES}, got {shape!r}")


@register("kd_annealed")
class AnnealedDistillation(WithTeacher):
    """L = (1 - alpha_e) CE(z, y) + alpha_e D(z, z^t; tau_e), terms ``ce`` and ``kd`` as in ``kd``, with alpha_e and
    tau_e set per epoch by :func:`anneal`. Lowering the temperature over training is the curriculum idea of annealing
    KD (Jafari et al. 2021, "Annealing Knowledge Distillation", EACL, which anneals a temperature on the teacher's
    logits under an MSE loss; this is the KL form); the defaults (tau 4 -> 1, alpha 0.9 fixed, cosine) are kdlab's,
    not a paper's recipe. With start = end it is
    ``kd`` exactly (tested). The epoch's values are logged as ``method_alpha`` and ``method_tau``."""

    class Params(TeacherParams):
        divergence: Literal[losses.DIVERGENCES] = "kl"
        alpha_start: float = Field(0.9, ge=0, le=1, description="alpha in the first epoch")
        alpha_end: float = Field(0.9, ge=0, le=1, description="alpha in the last epoch")
        tau_start: float = Field(4.0, gt=0, description="tau in the first epoch")
        tau_end: float = Field(1.0, gt=0, description="tau in the last epoch")
        shape: Literal[SHAPES] = Field("cosine", description="linear, cosine or step (half and half)")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        if context.epochs is None:
            raise KdlabError(f"method {self.name} needs the run's epochs in its MethodContext (epochs=...)")
        self.epochs = context.epochs
        self._epoch = 0

    def values(self, epoch: int) -> tuple[float, float]:
        """(alpha, tau) at ``epoch``."""
        p = self.params
        return (anneal(p.alpha_start, p.alpha_end, epoch, self.epochs, p.shape),
                anneal(p.tau_start, p.tau_end, epoch, self.epochs, p.shape))

    def forward(self, inputs, labels, epoch, keys=None):
        self._epoch = epoch
        logits = self.model(inputs)
        alpha, tau = self.values(epoch)
        return logits, losses.kd_terms(logits, self.teacher(inputs, keys), labels, alpha, tau, self.params.divergence)

    def epoch_log(self):
        alpha, tau = self.values(self._epoch)
        return {"alpha": alpha, "tau": tau}
