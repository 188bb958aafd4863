"""``kd``: knowledge distillation from a trained teacher (Hinton et al. 2015; Kim et al. 2021 for MSE on logits)."""

from typing import Literal

from pydantic import Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.with_teacher import TeacherParams, WithTeacher

DIVERGENCES = {
    "kl": lambda z, zt, y, tau: losses.kd_kl(z, zt, y, alpha=1.0, tau=tau),
    "reverse_kl": lambda z, zt, y, tau: losses.kd_reverse_kl(z, zt, y, alpha=1.0, tau=tau),
    "mse": lambda z, zt, y, tau: losses.kd_mse(z, zt, y, alpha=1.0),
}


@register("kd")
class KnowledgeDistillation(WithTeacher):
    """L = (1 - alpha) CE(z, y) + alpha D(z, z^t), logged as terms ``ce`` and ``kd``.

    D is ``kl``: tau^2 KL(softmax(z^t/tau) || softmax(z/tau)) (batchmean); ``reverse_kl``: tau^2 KL(softmax(z/tau) ||
    softmax(z^t/tau)); or ``mse``: mean over N*K of (z - z^t)^2 (kd_data's convention; tau unused). Defaults are the
    CIFAR-100 benchmark's 0.1 CE + 0.9 KD at tau 4 (RepDistiller, mdistiller; METHODS.md section 4.1).
    """

    class Params(TeacherParams):
        divergence: Literal["kl", "reverse_kl", "mse"] = "kl"
        alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term")
        tau: float = Field(4.0, gt=0, description="temperature (kl and reverse_kl)")

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        teacher = self.teacher(inputs, keys)
        p = self.params
        return logits, {
            "ce": (1 - p.alpha) * losses.cross_entropy(logits, labels),
            "kd": p.alpha * DIVERGENCES[p.divergence](logits, teacher, labels, p.tau),
        }
