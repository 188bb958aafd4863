"""``kd``: knowledge distillation from a trained teacher (Hinton et al. 2015; Kim et al. 2021 for MSE on logits)."""

from typing import Literal

from pydantic import Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.with_teacher import TeacherParams, WithTeacher

@register("kd")
class KnowledgeDistillation(WithTeacher):
    """L = (1 - alpha) CE(z, y) + alpha D(z, z^t), logged as terms ``ce`` and ``kd``.

    D is ``kl``: tau^2 KL(softmax(z^t/tau) || softmax(z/tau)) (batchmean); ``reverse_kl``: tau^2 KL(softmax(z/tau) ||
    softmax(z^t/tau)); or ``mse``: mean over N*K of (z - z^t)^2 (kd_data's convention; tau unused). Defaults are the
    CIFAR-100 benchmark's 0.1 CE + 0.9 KD at tau 4 (RepDistiller, mdistiller; docs/methods/kd.md §4.1).
    """

    class Params(TeacherParams):
        divergence: Literal[losses.DIVERGENCES] = "kl"
        alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term")
        tau: float = Field(4.0, gt=0, description="temperature (kl and reverse_kl)")

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        p = self.params
        return logits, losses.kd_terms(logits, self.teacher(inputs, keys), labels, p.alpha, p.tau, p.divergence)
