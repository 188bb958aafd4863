"""``at``: attention transfer (Zagoruyko & Komodakis 2017): match the spatial attention maps of stages."""

from pydantic import Field

from kdlab.losses.features import attention_loss
from kdlab.methods import register
from kdlab.methods.with_features import FeatureParams, WithFeatures


@register("at")
class AttentionTransfer(WithFeatures):
    """L = gamma CE + beta mean_pairs mean((a(f_s) - a(f_t))^2), a(f) = normalise(mean_c |f|^p) (term ``at``).
    Defaults: RepDistiller's CIFAR-100 run (beta 1000, p = 2) on the residual stages
    (docs/methods/feature_kd.md §2)."""

    term = "at"

    class Params(FeatureParams):
        beta: float = Field(1000.0, ge=0, description="weight of the attention term")
        p: float = Field(2.0, gt=0, description="exponent of the attention map")
        student_taps: list[str] = Field(default_factory=lambda: ["stage2", "stage3", "stage4"])
        teacher_taps: list[str] = Field(default_factory=lambda: ["stage2", "stage3", "stage4"])

    def feature_loss(self, student, teacher, keys=None):
        return attention_loss(student, teacher, self.params.p)
