"""``mixup_kd``: KD on mixup / CutMix batches; the teacher sees the mixed input (docs/methods/training_schemes.md §2)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from kdlab import losses
from kdlab.losses.mixing import KINDS, apply_mix, draw_mix, mixed_cross_entropy
from kdlab.methods import register
from kdlab.methods.with_teacher import TeacherParams, WithTeacher


@register("mixup_kd")
class MixupKD(WithTeacher):
    """L = (1 - alpha) [lambda CE(z~, y) + (1 - lambda) CE(z~, y_perm)] + alpha tau^2 KL(p^t(x~)_tau || p~_tau), terms
    ``ce`` and ``kd``; a batch is mixed with probability ``rate`` (0: exactly ``kd``). Draws come from
    (mix_seed, epoch, step), so resumed runs repeat them."""

    class Params(TeacherParams):
        kind: Literal[KINDS] = Field("mixup", description="mixup or cutmix")
        mix_alpha: float = Field(1.0, gt=0, description="lambda ~ Beta(mix_alpha, mix_alpha)")
        rate: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed")
        mix_seed: int = Field(0, ge=0, description="seed of the mixing draws (with the epoch and step)")
        alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term")
        tau: float = Field(4.0, gt=0, description="temperature")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        self._epoch, self._step = -1, 0

    def _rng(self, epoch: int) -> np.random.Generator:
        if epoch != self._epoch:
            self._epoch, self._step = epoch, 0
        self._step += 1
        return np.random.default_rng([self.params.mix_seed, epoch, self._step])

    def forward(self, inputs, labels, epoch, keys=None):
        p = self.params
        mix = draw_mix(inputs.shape[0], inputs.shape[2], inputs.shape[3], self._rng(epoch), p.kind, p.mix_alpha,
                       p.rate)
        if mix.lam == 1.0 and mix.box is None:  # not mixed: plain KD (cached teacher logits may serve)
            logits = self.model(inputs)
            return logits, losses.kd_terms(logits, self.teacher(inputs, keys), labels, p.alpha, p.tau)
        mixed = apply_mix(inputs, mix)
        logits = self.model(mixed)
        return logits, {"ce": (1 - p.alpha) * mixed_cross_entropy(logits, labels, mix),
                        "kd": p.alpha * losses.divergence(logits, self.teacher(mixed), "kl", p.tau)}
