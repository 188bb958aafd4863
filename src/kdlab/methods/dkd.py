"""``dkd``: decoupled knowledge distillation (Zhao et al., CVPR 2022; mdistiller ``DKD.py``)."""

from pydantic import Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.with_teacher import TeacherParams, WithTeacher


@register("dkd")
class DecoupledKD(WithTeacher):
    """L = ce_weight CE + min((epoch + 1) / warmup, 1) (alpha TCKD + beta NCKD), terms ``ce``, ``tckd``, ``nckd``.

    TCKD and NCKD are :func:`kdlab.losses.dkd_parts`; epochs count from 1 in the warm-up as in mdistiller. Defaults:
    CIFAR-100 (alpha 1, beta 8, tau 4, warm-up 20); beta per pair in docs/methods/dkd.md §6.9.
    """

    class Params(TeacherParams):
        ce_weight: float = Field(1.0, ge=0)
        alpha: float = Field(1.0, ge=0)
        beta: float = Field(8.0, ge=0)
        tau: float = Field(4.0, gt=0)
        warmup: int = Field(20, ge=1, description="epochs over which the DKD terms ramp up linearly")

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        p = self.params
        tckd, nckd = losses.dkd_parts(logits, self.teacher(inputs, keys), labels, p.tau)
        ramp = min((epoch + 1) / p.warmup, 1.0)
        return logits, {
            "ce": p.ce_weight * losses.cross_entropy(logits, labels),
            "tckd": ramp * p.alpha * tckd,
            "nckd": ramp * p.beta * nckd,
        }
