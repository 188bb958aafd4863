"""``dml``: deep mutual learning (Zhang et al. 2018) as OKDDip's ``train_DML.py`` runs it: every peer updated in one
joint step, targets not detached by default (docs/methods/online.md §5.3)."""

from pydantic import Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.online import OnlineMethod, OnlineParams


@register("dml")
class DeepMutualLearning(OnlineMethod):
    """L = sum_i CE(z_i, y) + weight * w(e) * sum_i 1/(m-1) sum_{j != i} tau^2 KL(softmax(z_j/tau) || softmax(z_i/tau)).

    Defaults: independent networks (``trunk_stages: 0``), m = 2 peers, tau 3, no ramp-up. The original DML
    alternates the peers' updates and uses tau = 1 [docs/methods/online.md §5.3: UNVERIFIED]; set ``tau: 1`` for the
    latter.
    """

    class Params(OnlineParams):
        branches: int = Field(2, ge=2, le=16, description="networks trained together")
        trunk_stages: int | None = Field(0, ge=0, description="0: independent networks (DML); more shares stages")
        rampup: float = Field(0.0, ge=0, description="epochs of the sigmoid ramp-up of the weight (0: none)")

    def loss_terms(self, logits, features, shared, labels, weight):
        p = self.params
        return losses.online.dml_terms(logits, labels, p.tau, weight, p.detach_targets)
