"""``okddip``: online knowledge distillation with diverse peers (Chen et al. 2020), as ``train_GL.py`` /
``resnet_GL.py`` run it (docs/methods/online.md §5)."""

import torch
import torch.nn as nn
from pydantic import Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.online import OnlineMethod, OnlineParams


@register("okddip")
class DiversePeers(OnlineMethod):
    """Branches 1..m are peers, branch m+1 the group leader (used for inference). Peer a distils from its own
    attention-weighted aggregate t_a = sum_b alpha_ab z_b, alpha = softmax_b((W_L h_a)^T (W_E h_b)) per sample over
    the peers' pooled features h (self included, no 1/sqrt(d)); W_L, W_E are bias-free d -> d/8 maps. The leader
    distils from the peers' mean. L = sum_a CE(z_a) + CE(z_leader) + weight * w(e) * [sum_a tau^2 KL(t_a || z_a) +
    tau^2 KL(z_bar || z_leader)] (:func:`kdlab.losses.online.okddip_terms`). Defaults: 4 branches (3 peers + leader),
    tau 3, weight 1, ramp-up 80 epochs, targets not detached, the leader for inference."""

    has_leader = True

    class Params(OnlineParams):
        inference: str = Field("leader", description="the head used as the model: leader, peerN or best")
        projection_factor: int = Field(8, ge=1, description="query/key maps reduce the feature dimension d to d / this")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        d = self.branches.feature_dim
        reduced = max(1, d // params.projection_factor)
        self.query = nn.Linear(d, reduced, bias=False)
        self.key = nn.Linear(d, reduced, bias=False)

    def attention(self, peer_features: list[torch.Tensor]) -> torch.Tensor:
        return losses.online.peer_attention(torch.stack(peer_features), self.query.weight, self.key.weight)

    def loss_terms(self, logits, features, shared, labels, weight):
        p = self.params
        attention = self.attention(features[:-1])
        return losses.online.okddip_terms(logits[:-1], logits[-1], attention, labels, p.tau, weight, p.detach_targets)
