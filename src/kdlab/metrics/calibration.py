"""Calibration error of the top-1 prediction."""

from __future__ import annotations

import torch

from kdlab.metrics._inputs import as_logits_and_labels


def ece(logits, labels, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width, right-closed confidence bins (Guo et al. 2017).

    conf_i = max_k softmax(z_i)_k, acc_i = 1[argmax z_i = y_i]; bin m is (m/n_bins, (m+1)/n_bins];
    ECE = sum_m |B_m|/n * |mean_{B_m} acc - mean_{B_m} conf|, empty bins skipped. This is the binning of
    gpleiss/temperature_scaling and by-liu/MbLS (METHODS.md section 6.5).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    z, y = as_logits_and_labels(logits, labels)
    probs = torch.softmax(z.double(), dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == y).double()
    # Right-closed bins: bucketize(right=False) puts c in bin m when upper[m-1] < c <= upper[m].
    upper_edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[1:]
    bins = torch.bucketize(conf, upper_edges, right=False).clamp(max=n_bins - 1)
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    return ((acc_sum - conf_sum).abs().sum() / conf.numel()).item()
