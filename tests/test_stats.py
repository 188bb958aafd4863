"""Multi-seed summaries against hand values and scipy."""

import math

import numpy as np
import pytest
from scipy import stats as st

from kdlab.analysis import stats


def test_summarize_hand_values():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and isinstance(s["n"], int)
    assert s["mean"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, ddof 1
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t_{0.975, 3} from tables
    assert s["ci_low"] == pytest.approx(2.5 - half, abs=1e-9)
    assert s["ci_high"] == pytest.approx(2.5 + half, abs=1e-9)
    s90 = stats.summarize(np.array([1.0, 2.0, 3.0, 4.0]), confidence=0.9)
    assert s90["ci_high"] - s90["mean"] == pytest.approx(2.353363434801823 * math.sqrt(5 / 3) / 2, abs=1e-9)


@pytest.mark.parametrize("n", [2, 3, 5, 30])
def test_summarize_matches_scipy(n):
    x = np.random.default_rng(n).normal(0.9, 0.01, size=n)
    s = stats.summarize(list(x), confidence=0.95)
    assert s["mean"] == pytest.approx(np.mean(x), abs=1e-15)
    assert s["std"] == pytest.approx(np.std(x, ddof=1), abs=1e-15)
    low, high = st.t.interval(0.95, df=n - 1, loc=np.mean(x), scale=st.sem(x))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert all(isinstance(s[key], float) for key in ("mean", "std", "ci_low", "ci_high"))


def test_summarize_single_value_and_errors():
    s = stats.summarize([0.5])
    assert s["n"] == 1 and s["mean"] == 0.5 and s["std"] == 0.0
    assert math.isnan(s["ci_low"]) and math.isnan(s["ci_high"])
    constant = stats.summarize([0.25, 0.25, 0.25])
    assert constant["std"] == 0.0 and constant["ci_low"] == constant["ci_high"] == 0.25
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([[1.0, 2.0], [3.0, 4.0]])
    for bad in (0.0, 1.0, 1.5, -0.1, "x"):
        with pytest.raises(ValueError):
            stats.summarize([1.0, 2.0], confidence=bad)


def test_paired_difference_hand_values_and_scipy():
    a = [0.91, 0.92, 0.93]
    b = [0.90, 0.90, 0.92]
    out = stats.paired_difference(a, b)
    diff = np.array(a) - np.array(b)  # 0.01, 0.02, 0.01
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(0.04 / 3)
    assert out["std"] == pytest.approx(math.sqrt(((0.01 - 0.04 / 3) ** 2 * 2 + (0.02 - 0.04 / 3) ** 2) / 2))
    t = out["mean"] / (out["std"] / math.sqrt(3))
    assert out["p_value"] == pytest.approx(2 * st.t.sf(t, 2), rel=1e-9)
    assert out["p_value"] == pytest.approx(st.ttest_rel(a, b).pvalue, rel=1e-12)
    assert {k: out[k] for k in ("n", "mean", "std", "ci_low", "ci_high")} == stats.summarize(diff)
    # Order matters: swapping the arguments flips the sign and keeps the p-value.
    swapped = stats.paired_difference(b, a)
    assert swapped["mean"] == pytest.approx(-out["mean"])
    assert swapped["p_value"] == pytest.approx(out["p_value"])


def test_paired_difference_random_against_scipy():
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.02, size=10)
    new = base + rng.normal(0.005, 0.01, size=10)
    out = stats.paired_difference(new, base, confidence=0.99)
    assert out["p_value"] == pytest.approx(st.ttest_rel(new, base).pvalue, rel=1e-12)
    low, high = st.t.interval(0.99, df=9, loc=np.mean(new - base), scale=st.sem(new - base))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((low, high), abs=1e-12)


def test_paired_difference_degenerate_cases():
    one = stats.paired_difference([0.9], [0.8])
    assert one["mean"] == pytest.approx(0.1) and math.isnan(one["p_value"]) and math.isnan(one["ci_low"])
    # A constant difference (up to the rounding of the subtraction) has no spread: no p-value.
    constant = stats.paired_difference([0.3, 0.4, 0.5], [0.2, 0.3, 0.4])
    assert constant["mean"] == pytest.approx(0.1)
    assert math.isnan(constant["p_value"])
    assert math.isnan(stats.paired_difference([0.5, 0.6], [0.5, 0.6])["p_value"])
    with pytest.raises(ValueError, match="same length"):
        stats.paired_difference([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError):
        stats.paired_difference([], [])


def test_format_mean_ci():
    summary = {"n": 3, "mean": 0.916, "std": 0.0012, "ci_low": 0.913, "ci_high": 0.919}
    assert stats.format_mean_ci(summary) == "0.9160 ± 0.0012 [0.9130, 0.9190]"
    assert stats.format_mean_ci(summary, digits=2, scale=100) == "91.60 ± 0.12 [91.30, 91.90]"
    assert stats.format_mean_ci(stats.summarize([0.5]), digits=3) == "0.500 ± 0.000 [nan, nan]"
    with pytest.raises(ValueError):
        stats.format_mean_ci(summary, digits=-1)
