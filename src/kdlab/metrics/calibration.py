"""Binned calibration errors: ECE, MCE, adaptive (equal-mass) ECE and classwise ECE.

Notation: p_i = softmax(z_i), conf_i = max_k p_ik, pred_i = argmax_k p_ik, acc_i = 1[pred_i = y_i], n samples.
Every error is computed in float64 from per-bin sums, with the bin weight |B|/n and empty bins skipped.

Relation to torchmetrics (``multiclass_calibration_error``, checked on torchmetrics 1.9 in tests/test_metrics.py):
torchmetrics bins with ``bucketize(conf, linspace(0, 1, n_bins + 1), right=True) - 1``, i.e. *left-closed* bins
[m/n_bins, (m+1)/n_bins) plus an extra bin holding conf == 1.0, and it casts confidences to float32 first (so any
conf above 1 - 2^-25 becomes exactly 1.0 and lands in that extra bin). Our bins are right-closed (lo, hi] as in
Guo et al. / gpleiss/temperature_scaling / by-liu/MbLS. The two therefore agree (to float32 rounding, ~1e-7)
when no confidence lies exactly on an interior edge m/n_bins and none rounds to 1.0 in float32; they differ
otherwise (e.g. a binary tie conf = 0.5, or very confident predictions). We keep our own implementation.
"""

from __future__ import annotations

import numpy as np
import torch

from kdlab.metrics._inputs import as_logits_and_labels


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def _equal_width_bins(x: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin index in [0, n_bins - 1] of each x in [0, 1]: bin m is (m/n_bins, (m+1)/n_bins], and x = 0 goes to bin 0."""
    # bucketize(right=False) returns m with upper[m-1] < x <= upper[m]; x <= upper[0] (including 0) gives 0.
    upper_edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[1:]
    return torch.bucketize(x, upper_edges, right=False).clamp(max=n_bins - 1)


def _top1(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(conf, acc) float64 vectors of the top-1 prediction."""
    z, y = as_logits_and_labels(logits, labels)
    conf, pred = torch.softmax(z, dim=1).max(dim=1)
    return conf, (pred == y).double()


def _bin_sums(bins: torch.Tensor, conf: torch.Tensor, acc: torch.Tensor, n_bins: int):
    """Per-bin (count, sum of conf, sum of acc)."""
    count = torch.bincount(bins, minlength=n_bins).double()
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=acc, minlength=n_bins)
    return count, conf_sum, acc_sum


def reliability_bins(logits, labels, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin statistics of a reliability diagram, in the bins :func:`ece` uses (equal-width, right-closed).

    Returns float64 arrays ``edges`` (n_bins + 1,), ``count`` (n_bins,), ``accuracy`` and ``confidence``
    (n_bins,, NaN where the bin is empty); ECE = sum_m count_m/n * |accuracy_m - confidence_m| over non-empty bins.
    The one binning of the project: plots and archives draw and store these.
    """
    _check_n_bins(n_bins)
    conf, acc = _top1(logits, labels)
    count, conf_sum, acc_sum = _bin_sums(_equal_width_bins(conf, n_bins), conf, acc, n_bins)
    count, conf_sum, acc_sum = count.numpy(), conf_sum.numpy(), acc_sum.numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "count": count, "accuracy": acc_sum / count,
                "confidence": conf_sum / count}


def ece(logits, labels, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width, right-closed confidence bins (Guo et al. 2017).

    conf_i = max_k softmax(z_i)_k, acc_i = 1[argmax z_i = y_i]; bin m is (m/n_bins, (m+1)/n_bins];
    ECE = sum_m |B_m|/n * |mean_{B_m} acc - mean_{B_m} conf|, empty bins skipped. This is the binning of
    gpleiss/temperature_scaling and by-liu/MbLS (docs/methods/calibration.md §6.5). Implemented directly, not with
    torchmetrics, whose bins are left-closed (see the module docstring for where the two agree).
    """
    _check_n_bins(n_bins)
    conf, acc = _top1(logits, labels)
    _, conf_sum, acc_sum = _bin_sums(_equal_width_bins(conf, n_bins), conf, acc, n_bins)
    # sum_m |B_m|/n * |acc_sum_m/|B_m| - conf_sum_m/|B_m|| = sum_m |acc_sum_m - conf_sum_m| / n (empty bins add 0).
    return ((acc_sum - conf_sum).abs().sum() / conf.numel()).item()


def mce(logits, labels, n_bins: int = 15) -> float:
    """Maximum calibration error (Naeini et al. 2015; Guo et al. 2017): max over non-empty bins of |acc - conf|.

    Same right-closed equal-width bins as :func:`ece`: MCE = max_{m: B_m non-empty} |mean_{B_m} acc -
    mean_{B_m} conf|. Implemented directly; equals torchmetrics ``multiclass_calibration_error(..., norm="max")``
    under the same conditions as ECE (module docstring), which the tests check.
    """
    _check_n_bins(n_bins)
    conf, acc = _top1(logits, labels)
    count, conf_sum, acc_sum = _bin_sums(_equal_width_bins(conf, n_bins), conf, acc, n_bins)
    full = count > 0
    return ((acc_sum[full] - conf_sum[full]).abs() / count[full]).max().item()


def adaptive_ece(logits, labels, n_bins: int = 15) -> float:
    """Adaptive (equal-mass) ECE, exactly as by-liu/MbLS ``calibrate/evaluation/metrics.py`` AdaptiveECELoss.

    Edges: with s = the n top-1 confidences sorted ascending, e = np.interp(np.linspace(0, n, n_bins + 1),
    np.arange(n), s), so e_0 = min conf, e_{n_bins} = max conf, and the interior edges interpolate between order
    statistics (equal numbers of samples per bin up to ties and interpolation). Bins are right-closed,
    B_j = {i : e_j < conf_i <= e_{j+1}}; ECE = sum_j |B_j|/n * |mean_{B_j} acc - mean_{B_j} conf| with empty bins
    (e.g. from repeated edges) skipped, n being the total number of samples.

    Edge rule, kept from MbLS on purpose so that numbers are comparable: the samples whose confidence equals the
    minimum e_0 fall in no bin (e_0 < conf fails); they still count in n but contribute nothing. In particular
    a single sample, or all-equal confidences, give 0.
    """
    _check_n_bins(n_bins)
    conf, acc = _top1(logits, labels)
    n = conf.numel()
    conf_np = conf.numpy()
    edges = torch.from_numpy(np.interp(np.linspace(0, n, n_bins + 1), np.arange(n), np.sort(conf_np)))
    # With non-decreasing edges, bucketize(right=False) on the upper edges returns the j with
    # e_j < conf <= e_{j+1} for every conf > e_0 (repeated edges give empty bins), which is MbLS's (lo, hi] test.
    inside = conf > edges[0]
    bins = torch.bucketize(conf[inside], edges[1:], right=False).clamp(max=n_bins - 1)
    _, conf_sum, acc_sum = _bin_sums(bins, conf[inside], acc[inside], n_bins)
    return ((acc_sum - conf_sum).abs().sum() / n).item()


def classwise_ece(logits, labels, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al. 2019), in the by-liu/MbLS ClasswiseECELoss convention.

    For each class k: ECE_k = sum_m |B_mk|/n * |mean_{B_mk} 1[y = k] - mean_{B_mk} p_k| where the bins B_mk are
    equal-width right-closed bins (m/n_bins, (m+1)/n_bins] on p_k = softmax(z)_k over *all* n samples, empty bins
    skipped; classwise ECE = (1/K) sum_k ECE_k, the unweighted mean over classes.

    Differences from MbLS, both only on edge cases:
    * p_k can be exactly 0 (softmax underflow), which no (lo, hi] bin catches; MbLS silently drops such
      samples from the sum for that class, here 0 is put in the first bin (the same clamped bucketize as
      :func:`ece`).
    * MbLS averages over max(labels) + 1 classes; here over all K logit columns. The two coincide whenever
      the last class occurs in ``labels``.
    """
    _check_n_bins(n_bins)
    z, y = as_logits_and_labels(logits, labels)
    n, k = z.shape
    probs = torch.softmax(z, dim=1).T.contiguous()  # K x N: row k holds p_k of every sample
    total = torch.zeros((), dtype=torch.float64)
    chunk = max(1, 2_000_000 // n)  # classes per chunk, to bound memory on large N x K
    for start in range(0, k, chunk):
        p = probs[start : start + chunk]
        c = p.shape[0]
        target = (torch.arange(start, start + c).unsqueeze(1) == y.unsqueeze(0)).double()
        flat = (_equal_width_bins(p, n_bins) + n_bins * torch.arange(c).unsqueeze(1)).reshape(-1)
        conf_sum = torch.bincount(flat, weights=p.reshape(-1), minlength=c * n_bins)
        acc_sum = torch.bincount(flat, weights=target.reshape(-1), minlength=c * n_bins)
        total += (acc_sum - conf_sum).abs().sum() / n
    return (total / k).item()
