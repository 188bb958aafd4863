"""Verdict rule v2 for claims: one pre-declared primary contrast per sub-claim, four marks, power stated, Holm
across a claim's sub-claims (issue 24; docs/claims_rule_v2.md).

Each sub-claim gives the per-seed paired differences d_i = s (a_i - b_i), signed so that the claimed direction is
positive, and a margin delta > 0 tied to the published effect. With n pairs, mean m and sample std sd:

* ``+``: m > 0 is shown (one-sided paired t-test p_+ below alpha / 2, i.e. the 95% interval above 0);
* ``-``: m < 0 is shown (p_- below alpha / 2: the interval below 0);
* ``=``: |m| < delta is shown (two one-sided tests, p_= = max(p(m > -delta), p(m < delta)) below alpha / 2: the
  95% interval within (-delta, delta));
* ``not detectable``: none of them; the smallest effect the comparison detects with 80% power (two-sided paired
  t-test at alpha, from the noncentral t) is printed beside it.

When the 95% interval is no wider than delta, one of the first three always holds; "not detectable" therefore
means the interval is wider than delta. Across a claim's sub-claims, each one's candidate is ``=`` where its test
passes unadjusted (a difference shown within +-delta is negligible at the declared margin even when it also
excludes 0), else the direction with the smaller p; those p-values are Holm-adjusted (step-down) before they are compared with alpha / 2, so a claim's
family of sub-claims holds its error rate. ``approaches`` (a gap that closes as a parameter grows): ``+`` when the
gap at the first setting is shown (``+`` or ``-``) and the one at the last is shown equivalent (``=``), ``-`` when
the last gap is still shown, ``not detectable`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as st

MARKS = ("+", "-", "=", "not detectable")


@dataclass(frozen=True)
class Decision:
    """The mark of one sub-claim with what it was read from (the interval is the unadjusted 95% one)."""

    mark: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    delta: float
    p_adjusted: float
    mde: float


def one_sided_p(differences, threshold: float, greater: bool) -> float:
    """p of the one-sided one-sample t-test of mean > threshold (``greater``) or mean < threshold; differences with
    no spread give 0 or 1 exactly."""
    d = np.asarray(differences, dtype=np.float64)
    n, mean = d.size, float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    if n < 2:
        return math.nan
    if not sd > 1e-12 * max(1.0, float(np.abs(d).max())):
        return 0.0 if (mean > threshold if greater else mean < threshold) else 1.0
    t = (mean - threshold) / (sd / math.sqrt(n))
    return float(st.t.sf(t, n - 1) if greater else st.t.cdf(t, n - 1))


def power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` to detect a true mean difference ``effect``."""
    df, critical = n - 1, st.t.ppf(1 - alpha / 2, n - 1)
    ncp = effect * math.sqrt(n) / sd
    lower = float(st.nct.cdf(-critical, df, ncp))  # the far tail: scipy returns nan where it underflows
    return float(st.nct.sf(critical, df, ncp)) + (0.0 if math.isnan(lower) else lower)


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, target: float = 0.8) -> float:
    """The smallest true difference the two-sided paired t-test over ``n`` pairs with spread ``sd`` detects with
    probability ``target`` (80% power): the root of power(effect) = target."""
    if n < 2 or not sd > 0:
        return math.nan if n < 2 else 0.0
    upper = sd / math.sqrt(n)
    while power(upper, sd, n, alpha) < target:  # double until the root is bracketed
        upper *= 2
    return float(optimize.brentq(lambda e: power(e, sd, n, alpha) - target, 0.0, upper, xtol=1e-14 * sd))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running, m = [0.0] * len(p_values), 0.0, len(p_values)
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def decide(differences: dict[str, list[float]], deltas: dict[str, float], alpha: float = 0.05) -> dict[str, Decision]:
    """The marks of a claim's sub-claims (name -> per-seed differences in the claimed direction, name -> delta),
    Holm-adjusted across them."""
    if set(differences) != set(deltas):
        raise ValueError("every sub-claim needs its differences and its delta")
    candidates = {}
    for name, values in differences.items():
        delta = float(deltas[name])
        if not delta > 0:
            raise ValueError(f"sub-claim {name}: delta must be > 0, got {delta!r}")
        d = np.asarray(values, dtype=np.float64)
        if d.size < 2:
            raise ValueError(f"sub-claim {name}: needs at least 2 paired differences, got {d.size}")
        p = {"+": one_sided_p(d, 0.0, True), "-": one_sided_p(d, 0.0, False),
             "=": max(one_sided_p(d, -delta, True), one_sided_p(d, delta, False))}
        # a difference shown to lie within +-delta is negligible at the declared margin, even where it also
        # excludes 0: "=" takes precedence over a direction
        candidates[name] = ("=", p["="]) if p["="] < alpha / 2 else min(
            (("+", p["+"]), ("-", p["-"])), key=lambda item: item[1])
    names = list(candidates)
    adjusted = holm([candidates[name][1] for name in names])
    decisions = {}
    for name, p_adjusted in zip(names, adjusted):
        d = np.asarray(differences[name], dtype=np.float64)
        n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
        half = float(st.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        mark = candidates[name][0] if p_adjusted < alpha / 2 else "not detectable"
        decisions[name] = Decision(mark, n, mean, mean - half, mean + half, float(deltas[name]), p_adjusted,
                                   minimum_detectable_effect(sd, n, alpha))
    return decisions


def approaches(first_gap: list[float], last_gap: list[float], delta: float, alpha: float = 0.05) -> str:
    """``+`` when the gap at the first setting is shown and the one at the last is shown within +-delta (the two
    tests Holm-adjusted as one family), ``-`` when the last gap is still shown, ``not detectable`` otherwise."""
    marks = decide({"first": first_gap, "last": last_gap}, {"first": delta, "last": delta}, alpha)
    if marks["last"].mark in ("+", "-"):
        return "-"
    if marks["first"].mark in ("+", "-") and marks["last"].mark == "=":
        return "+"
    return "not detectable"
