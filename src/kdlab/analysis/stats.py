"""Summaries of repeated runs (one value per seed): mean, sample std, Student-t confidence intervals, paired tests."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st

# Differences whose sample std is below this fraction of the inputs' magnitude are treated as constant: that
# spread is floating-point noise from the subtraction, and a t-test on it would be meaningless.
_ZERO_SPREAD = 1e-12


def _as_vector(values, name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty")
    return x


def _check_confidence(confidence: float) -> None:
    try:
        ok = 0 < float(confidence) < 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def summarize(values, confidence: float = 0.95) -> dict:
    """{"n", "mean", "std", "ci_low", "ci_high"} of a sample, e.g. one metric over seeds.

    std is the sample standard deviation (ddof = 1), defined as 0 for n = 1. The interval is the Student-t
    confidence interval for the mean: mean -+ t_{(1 + c)/2, n - 1} * std / sqrt(n), with t from
    ``scipy.stats.t.ppf``. For n = 1 there are no degrees of freedom and the interval is (nan, nan).
    NaN values are not dropped: they propagate to the results.
    """
    _check_confidence(confidence)
    x = _as_vector(values)
    n = int(x.size)
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": 0.0, "ci_low": math.nan, "ci_high": math.nan}
    std = float(x.std(ddof=1))
    half = float(_st.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_difference(values, baseline_values, confidence: float = 0.95) -> dict:
    """summarize() of the per-pair differences values[i] - baseline_values[i], plus "p_value".

    Pairs are matched by position (e.g. both lists ordered by seed); the lengths must match (ValueError
    otherwise). p_value is the two-sided paired t-test (``scipy.stats.ttest_rel``), i.e. the one-sample t-test
    of the differences against 0. It is nan when n < 2 or when the differences have zero spread (sample std
    <= 1e-12 times the largest |input|, i.e. constant up to floating-point noise), where the test is undefined.
    """
    a = _as_vector(values, "values")
    b = _as_vector(baseline_values, "baseline_values")
    if a.shape != b.shape:
        raise ValueError(f"values and baseline_values must have the same length, got {a.size} and {b.size}")
    diff = a - b
    out = summarize(diff, confidence)
    magnitude = float(np.max(np.abs(np.concatenate([a, b]))))
    if out["n"] < 2 or not out["std"] > _ZERO_SPREAD * magnitude:
        out["p_value"] = math.nan
    else:
        out["p_value"] = float(_st.ttest_rel(a, b).pvalue)
    return out


def format_mean_ci(summary: dict, digits: int = 4, scale: float = 1.0) -> str:
    """"mean ± std [ci_low, ci_high]", every number multiplied by ``scale`` (e.g. 100 for percent) and printed
    with ``digits`` decimals, e.g. "0.9160 ± 0.0012 [0.9130, 0.9190]".

    The ± term is the sample standard deviation (the spread over runs), not the half-width of the interval;
    the bracket is the confidence interval of the mean. For n = 1 the bracket reads "[nan, nan]".
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
        raise ValueError(f"digits must be a non-negative integer, got {digits!r}")

    def fmt(key: str) -> str:
        return f"{summary[key] * scale:.{digits}f}"

    return f"{fmt('mean')} ± {fmt('std')} [{fmt('ci_low')}, {fmt('ci_high')}]"
