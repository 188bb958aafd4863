"""The base of every method that distils from a trained teacher run."""

from __future__ import annotations

from typing import Literal

import torch
import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdlab.methods.base import Method, MethodContext
from kdlab.teacher import load_teacher


class TeacherParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(description="the teacher's run directory")
    teacher_checkpoint: Literal["final", "best"] = Field("final", description="the teacher's final or best-epoch weights")

    @field_validator("teacher")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return os.path.normpath(os.path.abspath(os.path.expanduser(os.path.expandvars(value))))


class WithTeacher(Method):
    """Holds ``self.teacher``: frozen, in eval mode, left out of checkpoints, run under inference mode.

    ``forward(inputs, labels, epoch, keys=None)``: the engine passes each input's (sample, view) ``keys`` when the
    augmentation is discrete, and ``teacher_logits`` then serves them from ``self.cache``
    (:class:`kdlab.teacher_cache.TeacherLogitCache`, attached by the engine) when there is one.
    """

    frozen = ("teacher",)
    uses_batch_keys = True
    cache = None

    def __init__(self, model, params, context: MethodContext):
        super().__init__(model, params, context)
        self.teacher = load_teacher(params.teacher, context.dataset, params.teacher_checkpoint,
                                    input_mean=context.mean, input_std=context.std, features=context.features)

    def teacher_logits(self, inputs: torch.Tensor, keys=None) -> torch.Tensor:
        """z^t for ``inputs``, computed without autograd bookkeeping (or looked up in the cache by ``keys``); a
        constant for the student's loss."""
        with torch.inference_mode():
            if self.cache is not None and keys is not None:
                logits = self.cache.logits(self.teacher, inputs, keys)
            else:
                logits = self.teacher(inputs)
        return logits.clone()  # an ordinary tensor again, so autograd may use it as a constant
