"""``ce``: plain cross-entropy on hard labels, the baseline every method is compared with."""

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.base import Method


@register("ce")
class CrossEntropy(Method):
    """L = H(q, p) with q the one-hot label."""

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        return logits, {"ce": losses.cross_entropy(logits, labels)}
