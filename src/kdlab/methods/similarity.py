"""``sp``: similarity-preserving KD (Tung & Mori 2019): match the batch's pairwise similarity matrices."""

from pydantic import Field

from kdlab.losses.features import similarity_loss
from kdlab.methods import register
from kdlab.methods.with_features import FeatureParams, WithFeatures


@register("sp")
class SimilarityPreserving(WithFeatures):
    """L = gamma CE + beta ||G_s - G_t||_F^2 / N^2, G the row-normalised Gram matrix of the flattened features
    (term ``sp``). Defaults: RepDistiller's CIFAR-100 run (beta 3000) on the last stage
    (docs/methods/feature_kd.md §3)."""

    term = "sp"

    class Params(FeatureParams):
        beta: float = Field(3000.0, ge=0, description="weight of the similarity term")
        student_taps: list[str] = Field(default_factory=lambda: ["stage4"])
        teacher_taps: list[str] = Field(default_factory=lambda: ["stage4"])

    def feature_loss(self, student, teacher, keys=None):
        return similarity_loss(student, teacher)
