"""``one``: on-the-fly native ensemble (Lan et al. 2018), as OKDDip's ``train_one.py`` / ``resnet_one.py`` run it
(docs/methods/online.md §5.3)."""

import torch
import torch.nn as nn

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.online import OnlineMethod


@register("one")
class OnTheFlyNativeEnsemble(OnlineMethod):
    """A gate g = softmax(ReLU(BN1d(Linear(pool(trunk output))))) (N x m) weights the branches into a teacher
    z_e = sum_i g_i z_i; L = sum_i CE(z_i, y) + CE(z_e, y) + weight * w(e) * sum_i tau^2 KL(softmax(z_e/tau) ||
    softmax(z_i/tau)). The gate reads the globally pooled trunk output (the reference pools the 16 x 16 ResNet
    trunk with AvgPool16, the same thing at that size); with independent networks (no trunk) it reads the input."""

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        width = self._trunk_width(context)
        self.gate = nn.Sequential(nn.Linear(width, params.branches), nn.BatchNorm1d(params.branches), nn.ReLU())

    def _trunk_width(self, context) -> int:
        with torch.no_grad():
            probe = torch.zeros(2, *context.model_input_shape)
            was_training = self.branches.training
            self.branches.eval()
            width = self.branches.trunk(probe).shape[1]
            self.branches.train(was_training)
        return int(width)

    def gate_weights(self, shared: torch.Tensor) -> torch.Tensor:
        pooled = shared.mean(dim=(2, 3))
        linear, norm, relu = self.gate
        if self.training and len(pooled) == 1:  # a last batch of one sample: BatchNorm1d has no batch statistics
            normed = nn.functional.batch_norm(linear(pooled), norm.running_mean, norm.running_var, norm.weight,
                                              norm.bias, training=False, eps=norm.eps)
            return torch.softmax(relu(normed).float(), dim=1)
        return torch.softmax(self.gate(pooled).float(), dim=1)

    def loss_terms(self, logits, features, shared, labels, weight):
        p = self.params
        return losses.online.one_terms(logits, self.gate_weights(shared), labels, p.tau, weight, p.detach_targets)
