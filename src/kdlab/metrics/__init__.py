"""Pure functions from logits and labels to numbers: ``(logits, labels, ...) -> float``.

Inputs may be torch tensors or numpy arrays; logits are N x K, labels N integer class indices (teacher logits
N x K for the fidelity metrics). Everything is computed in float64 on the CPU and returned as a python float
(:func:`reliability_bins` returns the per-bin arrays behind ECE). Temperature scaling, which fits a temperature and
reports the metrics before and after, is :mod:`kdlab.metrics.temperature_scaling`.
"""

from __future__ import annotations

import numpy as np

from kdlab.metrics._inputs import as_logits_and_labels
from kdlab.metrics.calibration import adaptive_ece, classwise_ece, ece, mce, reliability_bins
from kdlab.metrics.classification import accuracy, brier, nll, topk_accuracy
from kdlab.metrics.clips import clip_accuracy, clip_nll, clip_probabilities
from kdlab.metrics.fidelity import agreement, fidelity_all, fidelity_kl


def evaluate_all(logits, labels, groups=None) -> dict[str, float]:
    """Every label metric with default settings (15 bins), in this key order:

    acc, top5 (only when K > 5, where it is informative), nll, brier, ece, adaptive_ece, classwise_ece, mce, and
    with ``groups`` (segments of clips) clip_acc, clip_nll and clips (their count).
    """
    z, y = as_logits_and_labels(logits, labels)  # convert and validate once
    out = {"acc": accuracy(z, y)}
    if z.shape[1] > 5:
        out["top5"] = topk_accuracy(z, y, k=5)
    out["nll"] = nll(z, y)
    out["brier"] = brier(z, y)
    out["ece"] = ece(z, y)
    out["adaptive_ece"] = adaptive_ece(z, y)
    out["classwise_ece"] = classwise_ece(z, y)
    out["mce"] = mce(z, y)
    if groups is not None:
        out["clip_acc"] = clip_accuracy(z, y, groups)
        out["clip_nll"] = clip_nll(z, y, groups)
        out["clips"] = int(len(np.unique(np.asarray(groups.cpu() if hasattr(groups, "cpu") else groups))))
    return out


__all__ = [
    "accuracy",
    "adaptive_ece",
    "agreement",
    "brier",
    "classwise_ece",
    "clip_accuracy",
    "clip_nll",
    "clip_probabilities",
    "ece",
    "evaluate_all",
    "fidelity_all",
    "fidelity_kl",
    "mce",
    "nll",
    "reliability_bins",
    "topk_accuracy",
]
