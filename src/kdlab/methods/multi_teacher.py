"""``multi_kd``: knowledge distillation from an ensemble of teachers (docs/methods/training_schemes.md §1)."""

from __future__ import annotations

from typing import Literal

import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.losses.ensemble import COMBINATIONS, ensemble_kd
from kdlab.methods import register
from kdlab.methods.base import Method
from kdlab.teacher.spec import LibraryTeacherSpec, parse_teacher


@register("multi_kd")
class MultiTeacherKD(Method):
    """L = (1 - alpha) CE(z, y) + alpha tau^2 KL(target(z^t_1..z^t_M) || softmax(z / tau)), terms ``ce`` and ``kd``;
    ``combine`` picks the target (:mod:`kdlab.losses.ensemble`). Every teacher is a run directory or a library
    model, each with its own logit cache; the first is the one the run's fidelity is measured against."""

    frozen = ("teachers",)
    needs_teacher = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        teachers: list[str | LibraryTeacherSpec] = Field(min_length=1, description="the teachers: run directories "
                                                         "or library models with weights and classes")
        teacher_checkpoint: Literal["final", "best"] = "final"
        combine: Literal[COMBINATIONS] = Field("logits", description="logits: mean of logits; probs: mean of "
                                               "probabilities; confidence: per-sample weights softmax(-CE)")
        alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term")
        tau: float = Field(4.0, gt=0, description="temperature")

        @field_validator("teachers", mode="before")
        @classmethod
        def _teachers(cls, value):
            return [parse_teacher(v) for v in value] if isinstance(value, list) else value

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        if context.load_teacher is None:
            raise KdlabError(f"method {self.name} needs teachers, and its MethodContext has no load_teacher")
        self.teachers = nn.ModuleList(context.load_teacher(spec, params.teacher_checkpoint) for spec in params.teachers)

    def forward(self, inputs, labels, epoch, keys=None):
        p = self.params
        logits = self.model(inputs)
        targets = [teacher(inputs, keys) for teacher in self.teachers]
        return logits, {"ce": (1 - p.alpha) * losses.cross_entropy(logits, labels),
                        "kd": p.alpha * ensemble_kd(logits, targets, labels, p.tau, p.combine)}
