"""``cl_ilr``: collaborative learning with intermediate-level representation sharing (Song & Chai 2018), as
OKDDip's ``train_one.py --avg --bpscale`` runs it (docs/methods/online.md §5.3)."""

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.online import OnlineMethod


@register("cl_ilr")
class CollaborativeLearning(OnlineMethod):
    """L = sum_i CE(z_i, y) + weight * w(e) * sum_i tau^2 KL(softmax(t_i/tau) || softmax(z_i/tau)), with t_i the mean
    of the *other* branches' logits; the gradient into the shared trunk is divided by the branch count m."""

    gradient_scale_trunk = True

    def loss_terms(self, logits, features, shared, labels, weight):
        p = self.params
        return losses.online.cl_ilr_terms(logits, labels, p.tau, weight, p.detach_targets)
