"""Verdict rule v2 (kdlab.analysis.decisions) on synthetic per-seed differences with known answers: the four marks,
the smallest detectable effect against a simulation of the paired t-test, Holm's adjustment, and "approaches"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdlab.analysis.decisions import approaches, decide, holm, minimum_detectable_effect, one_sided_p, power


def around(mean, spread, n=6, seed=0):
    """n values with exactly this mean and sample standard deviation."""
    z = np.random.default_rng(seed).normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    return list(mean + spread * z)


@pytest.mark.parametrize("values, delta, mark", [
    (around(0.02, 0.002), 0.01, "+"),             # a clear gain
    (around(-0.02, 0.002), 0.01, "-"),            # a clear loss
    (around(0.0005, 0.001), 0.01, "="),           # shown within +-delta
    (around(0.005, 0.02), 0.01, "not detectable"),  # interval wider than delta
    (around(0.015, 0.0005), 0.01, "+"),           # shown, and larger than delta: still "+"
])
def test_each_mark_on_a_known_case(values, delta, mark):
    decision = decide({"c": values}, {"c": delta})["c"]
    assert decision.mark == mark
    assert decision.ci_low < decision.mean < decision.ci_high and decision.n == 6


def test_a_narrow_interval_is_never_undetectable():
    """An interval no wider than delta always decides: +, - or =."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        values = rng.normal(rng.uniform(-0.02, 0.02), 0.001, size=5)
        decision = decide({"c": list(values)}, {"c": 0.01})["c"]
        if decision.ci_high - decision.ci_low <= 0.01:
            assert decision.mark != "not detectable"


def test_one_sided_p_matches_the_t_distribution_by_hand():
    from scipy import stats

    values = [0.01, 0.03, 0.02, 0.015]
    d = np.array(values)
    t = d.mean() / (d.std(ddof=1) / 2)
    assert one_sided_p(values, 0.0, True) == pytest.approx(stats.t.sf(t, 3), rel=1e-12)
    assert one_sided_p(values, 0.0, False) == pytest.approx(stats.t.cdf(t, 3), rel=1e-12)
    assert one_sided_p([0.01] * 4, 0.0, True) == 0.0 and one_sided_p([0.01] * 4, 0.0, False) == 1.0


def test_the_detectable_effect_has_80_percent_power_by_simulation():
    sd, n = 0.01, 6
    effect = minimum_detectable_effect(sd, n)
    assert power(effect, sd, n) == pytest.approx(0.8, abs=1e-9)
    from scipy import stats

    rng = np.random.default_rng(2)
    samples = rng.normal(effect, sd, size=(200_000, n))
    t = samples.mean(1) / (samples.std(1, ddof=1) / math.sqrt(n))
    rejected = np.abs(t) > stats.t.ppf(0.975, n - 1)
    assert rejected.mean() == pytest.approx(0.8, abs=0.005)
    # more pairs detect smaller effects; the large-n limit is (z_0.975 + z_0.8) sd / sqrt(n)
    assert minimum_detectable_effect(sd, 10) < effect
    assert minimum_detectable_effect(sd, 400) == pytest.approx((1.959964 + 0.841621) * sd / 20, rel=0.01)


def test_holm_adjusts_step_down_in_input_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_holm_turns_three_marginal_gains_into_undetectable_ones():
    alone = around(0.01, 0.0085, n=6, seed=3)  # one-sided p about 0.012: a "+" alone
    assert decide({"a": alone}, {"a": 0.002})["a"].mark == "+"
    family = decide({k: around(0.01, 0.0085, n=6, seed=s) for k, s in (("a", 3), ("b", 4), ("c", 5))},
                    {k: 0.002 for k in "abc"})
    assert {d.mark for d in family.values()} == {"not detectable"}
    assert all(d.p_adjusted == pytest.approx(min(1, 3 * one_sided_p(around(0.01, 0.0085, 6, 3), 0, True)))
               for d in family.values())


def test_approaches_needs_a_shown_gap_first_and_a_shown_equivalence_last():
    gap, closed, open_, noisy = around(0.03, 0.003), around(0.0, 0.001), around(0.02, 0.002), around(0.0, 0.03)
    assert approaches(gap, closed, delta=0.01) == "+"
    assert approaches(gap, open_, delta=0.01) == "-"
    assert approaches(gap, noisy, delta=0.01) == "not detectable"
    assert approaches(noisy, closed, delta=0.01) == "not detectable"


def test_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="delta must be > 0"):
        decide({"a": [0.1, 0.2]}, {"a": 0})
    with pytest.raises(ValueError, match="at least 2"):
        decide({"a": [0.1]}, {"a": 0.01})
    with pytest.raises(ValueError, match="differences and its delta"):
        decide({"a": [0.1, 0.2]}, {"b": 0.01})
