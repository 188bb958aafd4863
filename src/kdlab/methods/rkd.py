"""``rkd``: relational knowledge distillation (Park et al. 2019): match distances and angles between samples."""

from pydantic import Field

from kdlab.losses.features import rkd_loss
from kdlab.methods import register
from kdlab.methods.with_features import FeatureParams, WithFeatures


@register("rkd")
class RelationalKD(WithFeatures):
    """L = gamma CE + beta (w_d L_distance + w_a L_angle) on the penultimate embeddings (term ``rkd``). Defaults:
    RepDistiller's CIFAR-100 run (beta 1, w_d 25, w_a 50) (docs/methods/feature_kd.md §5)."""

    term = "rkd"

    class Params(FeatureParams):
        distance_weight: float = Field(25.0, ge=0, description="w_d")
        angle_weight: float = Field(50.0, ge=0, description="w_a")

    def feature_loss(self, student, teacher, keys=None):
        p = self.params
        return sum(rkd_loss(s, t, p.distance_weight, p.angle_weight) for s, t in zip(student, teacher)) / len(student)
