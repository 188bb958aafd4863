"""kdlab's functional API: pure functions of logits and labels, like ``torch.nn.functional``.

Every loss returns the batch mean as a scalar tensor and takes the student logits ``z`` (N x K) first. Conventions
are explicit arguments, never hidden state; each function's docstring gives its formula and its source.
"""

from kdlab.losses.cross_entropy import cross_entropy, soft_cross_entropy
from kdlab.losses.label_smoothing import label_smoothing
from kdlab.losses.targets import one_hot, smoothed_labels

__all__ = [
    "cross_entropy",
    "label_smoothing",
    "one_hot",
    "smoothed_labels",
    "soft_cross_entropy",
]
