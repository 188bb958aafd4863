"""Pure functions from logits and labels to numbers: ``(logits, labels, ...) -> float``.

Inputs may be torch tensors or numpy arrays; logits are N x K, labels N integer class indices.
"""

from kdlab.metrics.calibration import ece
from kdlab.metrics.classification import accuracy, nll

__all__ = ["accuracy", "ece", "nll"]
