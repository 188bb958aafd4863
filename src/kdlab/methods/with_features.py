"""The base of the representation-distillation methods: named feature taps on student and teacher
(:mod:`kdlab.models.taps`), the task loss, optional KD on the logits, and one feature term.

L = gamma CE(z, y) + alpha tau^2 KL(p^t_tau || p_tau) + beta L_feat(f_s, f_t), logged as ``ce``, ``kd`` (when alpha
> 0) and the method's feature term. RepDistiller's CIFAR-100 scripts run the feature methods with gamma = 1, alpha
= 0 and a per-method beta (docs/methods/feature_kd.md §0), the defaults here. The teacher runs eagerly on every batch
(its features are not cached).
"""

from __future__ import annotations

from abc import abstractmethod

from pydantic import Field, model_validator

from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.methods.with_teacher import TeacherParams, WithTeacher
from kdlab.models.taps import FeatureTaps


class FeatureParams(TeacherParams):
    student_taps: list[str] = Field(default_factory=lambda: ["penultimate"], description="student layers read "
                                    "(stage1.., penultimate, or module paths)")
    teacher_taps: list[str] = Field(default_factory=lambda: ["penultimate"], description="the teacher layers they "
                                    "are compared with, one per student tap")
    gamma: float = Field(1.0, ge=0, description="weight of the cross-entropy term")
    alpha: float = Field(0.0, ge=0, description="weight of KD on the logits (0: none)")
    tau: float = Field(4.0, gt=0, description="KD temperature")
    beta: float = Field(1.0, ge=0, description="weight of the feature term")

    @model_validator(mode="after")
    def _paired(self):
        if len(self.student_taps) != len(self.teacher_taps) or not self.student_taps:
            raise ValueError(f"student_taps and teacher_taps must pair up one to one, got {len(self.student_taps)} "
                             f"and {len(self.teacher_taps)}")
        return self


class WithFeatures(WithTeacher):
    """Subclasses set ``term`` (the logged name) and implement :meth:`feature_loss`; ``connect`` says whether each
    student feature passes a trainable :class:`~kdlab.methods.connectors.Connector` first; heads of their own
    (regressors, embeddings) are sized from :meth:`feature_shapes`."""

    Params = FeatureParams
    term = "feat"
    connect = False

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        self._student_taps = FeatureTaps(model, params.student_taps)
        self._teacher_taps = self.teacher.tap(params.teacher_taps)
        if self.connect:
            import torch.nn as nn

            from kdlab.methods.connectors import Connector

            self.connectors = nn.ModuleList(Connector(s, t) for s, t in zip(*self.feature_shapes(context)))
        self.check_shapes(context)

    def feature_shapes(self, context) -> tuple[list, list]:
        """The shapes of the tapped student and teacher features, from one probe batch."""
        from kdlab.methods.connectors import probe_shapes

        return probe_shapes(self.model, self._student_taps, self.teacher, self._teacher_taps,
                            context.model_input_shape)

    def check_shapes(self, context) -> None:
        """A hook for methods whose feature pairs must agree in shape (checked once on a probe batch)."""

    @abstractmethod
    def feature_loss(self, student: list, teacher: list, keys=None):
        """L_feat of the tapped features (lists, one tensor per pair); ``keys`` are the batch's (sample, view) keys
        (methods with ``needs_sample_keys`` always get them)."""

    def forward(self, inputs, labels, epoch, keys=None):
        p = self.params
        logits = self.model(inputs)
        student = self._student_taps.take()
        if self.connect:
            student = [c(f) for c, f in zip(self.connectors, student)]
        teacher_logits, teacher = self.teacher.features(inputs, self._teacher_taps)
        terms = {"ce": p.gamma * losses.cross_entropy(logits, labels)}
        if p.alpha > 0:
            terms["kd"] = p.alpha * losses.divergence(logits, teacher_logits, "kl", p.tau)
        try:
            terms[self.term] = p.beta * self.feature_loss(student, teacher, keys)
        except RuntimeError as error:  # shapes that cannot be compared: say which taps
            raise KdlabError(f"method {self.name}: student taps {p.student_taps} and teacher taps {p.teacher_taps} "
                             f"give features that do not compare ({error})") from None
        return logits, terms
