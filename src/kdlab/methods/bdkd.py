"""``bdkd``: EXPERIMENTAL online teacher + student with balanced forward / reverse KL (Amara et al. 2022;
docs/methods/bdkd.md §6.8: the exact weighting is UNVERIFIED, see :func:`kdlab.losses.online.bdkd_terms`)."""

from pydantic import Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.online import OnlineMethod, OnlineParams


@register("bdkd")
class BalancedDivergenceKD(OnlineMethod):
    """Two networks of ``model.name`` trained together: branch 1 the student (the model), branch 2 the online teacher.
    EXPERIMENTAL: the per-sample weight w = sigmoid(sharpness * (H(p_s) - H(p_t))) between forward and reverse KL, the
    teacher's reverse-KL regulariser and every default are kdlab's placeholders, not the paper's (unpublished)."""

    class Params(OnlineParams):
        branches: int = Field(2, ge=2, le=2, description="student and online teacher")
        trunk_stages: int | None = Field(0, ge=0, description="0: independent networks")
        tau: float = Field(1.0, gt=0, description="temperature of both KL terms")
        rampup: float = Field(0.0, ge=0, description="epochs of the sigmoid ramp-up of the weight (0: none)")
        detach_targets: bool = Field(True, description="each KL term trains only the network it regularises")
        sharpness: float = Field(1.0, gt=0, description="k in w = sigmoid(k (H(p_s) - H(p_t)))")
        inference: str = Field("peer1", description="peer1 is the student, peer2 the online teacher")

    def loss_terms(self, logits, features, shared, labels, weight):
        p = self.params
        return losses.online.bdkd_terms(logits[0], logits[1], labels, p.tau, weight, p.sharpness, p.detach_targets)
