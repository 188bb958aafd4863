"""``fitnet``: FitNet hints (Romero et al. 2015): regress the student's features onto the teacher's."""

from pydantic import Field

from kdlab.losses.features import hint_loss
from kdlab.methods import register
from kdlab.methods.with_features import FeatureParams, WithFeatures


@register("fitnet")
class FitNet(WithFeatures):
    """L = gamma CE + beta mean_pairs MSE(r(f_s), f_t), r a trainable 1x1 conv + BN per tap (term ``hint``).
    Defaults: RepDistiller's CIFAR-100 hint run (gamma 1, alpha 0, beta 100) on the middle stage, the hint layer of
    the original FitNet (docs/methods/feature_kd.md §1). Trained end to end with the task loss, not in FitNet's
    two-stage schedule (as RepDistiller does)."""

    term = "hint"
    connect = True

    class Params(FeatureParams):
        beta: float = Field(100.0, ge=0, description="weight of the hint term")
        student_taps: list[str] = Field(default_factory=lambda: ["stage3"])
        teacher_taps: list[str] = Field(default_factory=lambda: ["stage3"])

    def feature_loss(self, student, teacher, keys=None):
        return sum(hint_loss(s, t) for s, t in zip(student, teacher)) / len(student)
