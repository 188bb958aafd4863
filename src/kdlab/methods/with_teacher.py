"""The base of every method that distils from a trained teacher run."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdlab.errors import KdlabError
from kdlab.methods.base import Method, MethodContext
from kdlab.teacher.spec import LibraryTeacherSpec, parse_teacher


class TeacherParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str | LibraryTeacherSpec = Field(description="the teacher's run directory, or a model with its weights "
                                              "and classes (see kdlab.teacher.spec)")
    teacher_checkpoint: Literal["final", "best"] = Field("final", description="the teacher's final or best-epoch "
                                                         "weights (run directories)")

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher(cls, value):
        return parse_teacher(value)


class WithTeacher(Method):
    """Holds ``self.teacher`` (a :class:`kdlab.teacher.Teacher`: frozen, in eval mode, left out of checkpoints),
    got from ``context.load_teacher``. ``self.teacher(inputs, keys)`` gives z^t, a constant for the student's loss
    (looked up in the teacher's logit cache by the inputs' (sample, view) ``keys`` when it has one)."""

    frozen = ("teacher",)
    needs_teacher = True

    def __init__(self, model, params, context: MethodContext):
        super().__init__(model, params, context)
        if context.load_teacher is None:
            raise KdlabError(f"method {self.name} needs a teacher, and its MethodContext has no load_teacher")
        self.teacher = context.load_teacher(params.teacher, params.teacher_checkpoint)
