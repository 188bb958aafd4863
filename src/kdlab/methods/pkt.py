"""``pkt``: probabilistic knowledge transfer (Passalis & Tefas 2018): match cosine-similarity distributions."""

from pydantic import Field

from kdlab.losses.features import pkt_loss
from kdlab.methods import register
from kdlab.methods.with_features import FeatureParams, WithFeatures


@register("pkt")
class ProbabilisticTransfer(WithFeatures):
    """L = gamma CE + beta KL-style divergence of the conditional-probability matrices of the penultimate
    embeddings (term ``pkt``). Defaults: RepDistiller's CIFAR-100 run (beta 30000) (docs/methods/feature_kd.md §4)."""

    term = "pkt"

    class Params(FeatureParams):
        beta: float = Field(30000.0, ge=0, description="weight of the PKT term")

    def feature_loss(self, student, teacher, keys=None):
        return sum(pkt_loss(s, t) for s, t in zip(student, teacher)) / len(student)
