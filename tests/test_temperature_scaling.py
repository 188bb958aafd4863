"""Temperature scaling against a direct numerical minimisation of the NLL, and its effect on calibration."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from kdlab import metrics
from kdlab.metrics import temperature_scaling


@pytest.fixture(autouse=True)
def _one_thread():
    # A background job shares the CPU: torch's intra-op threads only add contention for these small tensors.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def numpy_nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    return float(np.mean(logsumexp(z / t, axis=1) - z[np.arange(len(y)), y] / t))


def numpy_minimiser(z: np.ndarray, y: np.ndarray) -> float:
    """argmin over T in [1e-2, 1e2] of the NLL, by bounded Brent on log T (it returns the bound when the
    minimum lies outside)."""
    res = minimize_scalar(
        lambda log_t: numpy_nll(z, y, math.exp(log_t)),
        bounds=(math.log(1e-2), math.log(1e2)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(res.x)


def sample_labels(logits: np.ndarray, rng) -> np.ndarray:
    """Labels drawn from softmax(logits), so the logits are calibrated for them."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return np.minimum((p.cumsum(1) < rng.random(len(p))[:, None]).sum(1), p.shape[1] - 1)


def mixed_case(n, k, scale, p_correct, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    y = np.where(rng.random(n) < p_correct, z.argmax(1), rng.integers(0, k, n))
    return z, y


@pytest.mark.parametrize(
    "n,k,scale,p_correct,seed",
    [(2000, 10, 1.0, 0.7, 0), (2000, 10, 8.0, 0.7, 1), (500, 100, 3.0, 0.5, 2), (300, 2, 0.5, 0.8, 3),
     (50, 5, 20.0, 0.9, 4), (3, 4, 1.0, 0.5, 5)],
)
def test_fitted_temperature_is_the_numerical_minimiser(n, k, scale, p_correct, seed):
    z, y = mixed_case(n, k, scale, p_correct, seed)
    t_ref = numpy_minimiser(z, y)
    t = temperature_scaling.fit_temperature(z, y)
    assert isinstance(t, float)
    assert t == pytest.approx(t_ref, rel=1e-4)
    # ... and no point of a dense grid (around it and over the whole range) does better.
    whole_range = np.exp(np.linspace(math.log(1e-2), math.log(1e2), 2001))
    grid = np.concatenate([whole_range, t * (1 + np.linspace(-1e-3, 1e-3, 201))])
    grid = grid[(grid >= 1e-2) & (grid <= 1e2)]
    best = min(numpy_nll(z, y, g) for g in grid)
    assert numpy_nll(z, y, t) <= best + 1e-12
    # The same optimum from other starts, with torch input, and when LBFGS is cut short (bisection fallback).
    assert temperature_scaling.fit_temperature(torch.from_numpy(z).float(), torch.from_numpy(y), init=0.3) == pytest.approx(
        t_ref, rel=1e-4
    )
    assert temperature_scaling.fit_temperature(z, y, init=50.0) == pytest.approx(t_ref, rel=1e-4)
    assert temperature_scaling.fit_temperature(z, y, max_iter=1) == pytest.approx(t_ref, rel=1e-4)


def test_overconfident_logits_get_t_above_one_and_better_calibration():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(30000, 10)) * 1.5
    y = sample_labels(z, rng)
    hot = 3.0 * z  # the same ranking, over-confident by a factor 3
    val, test = slice(0, 15000), slice(15000, None)
    report = temperature_scaling.calibration_report(hot[val], y[val], hot[test], y[test])
    assert report["temperature"] > 1
    assert report["temperature"] == pytest.approx(3.0, rel=0.05)
    before, after = report["before"], report["after"]
    assert after["ece"] < before["ece"]
    assert after["nll"] < before["nll"]
    assert after["brier"] < before["brier"]
    assert after["acc"] == before["acc"]
    assert after["ece"] < 0.02


def test_calibrated_logits_get_t_near_one():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(20000, 10)) * 2.0
    y = sample_labels(z, rng)
    # The sampling error of the fitted T on 20000 samples is about 1%.
    assert temperature_scaling.fit_temperature(z, y) == pytest.approx(1.0, abs=0.05)


def test_degenerate_inputs():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(100, 5))
    # Every sample correct with a margin: NLL decreases towards T -> 0, so the lower clamp.
    assert temperature_scaling.fit_temperature(z, z.argmax(1)) == temperature_scaling.T_MIN == 1e-2
    # Very confident and all correct: same.
    assert temperature_scaling.fit_temperature(z * 1000, z.argmax(1)) == 1e-2
    # Every label the least likely class: NLL decreases towards T -> infinity, so the upper clamp.
    assert temperature_scaling.fit_temperature(z, z.argmin(1)) == temperature_scaling.T_MAX == 1e2
    # Very confident with a few errors: a large T, still the minimiser within the clamp range.
    zc, yc = mixed_case(500, 10, 200.0, 0.9, 3)
    assert temperature_scaling.fit_temperature(zc, yc) == pytest.approx(numpy_minimiser(zc, yc), rel=1e-4)
    assert temperature_scaling.fit_temperature(zc, yc) > 10
    # A single sample.
    assert temperature_scaling.fit_temperature(np.array([[2.0, 0.0]]), np.array([0])) == 1e-2
    assert temperature_scaling.fit_temperature(np.array([[2.0, 0.0]]), np.array([1])) == 1e2
    # NLL independent of T (constant rows): the initial value comes back, clamped.
    assert temperature_scaling.fit_temperature(np.ones((4, 3)), np.array([0, 1, 2, 0])) == 1.5
    assert temperature_scaling.fit_temperature(np.ones((4, 3)), np.array([0, 1, 2, 0]), init=1e3) == 1e2
    with pytest.raises(ValueError):
        temperature_scaling.fit_temperature(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError):
        temperature_scaling.fit_temperature(np.array([[np.inf, 0.0]]), np.array([0]))
    with pytest.raises(ValueError):
        temperature_scaling.fit_temperature(z, z.argmax(1), init=0.0)
    with pytest.raises(ValueError):
        temperature_scaling.fit_temperature(z, z.argmax(1), max_iter=0)


def test_scale_keeps_the_type_and_accuracy():
    z, y = mixed_case(300, 10, 2.0, 0.6, 4)
    t32 = torch.from_numpy(z).float()
    out = temperature_scaling.scale(t32, 2.5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.allclose(out, t32 / 2.5)
    out_np = temperature_scaling.scale(z.astype(np.float32), 2.5)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    assert isinstance(temperature_scaling.scale(z.tolist(), 2.0), np.ndarray)
    np.testing.assert_allclose(temperature_scaling.scale(z, 4.0), z / 4.0)
    for t in (0.01, 0.7, 3.0, 100.0):
        assert metrics.accuracy(temperature_scaling.scale(z, t), y) == metrics.accuracy(z, y)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            temperature_scaling.scale(z, bad)


def test_calibration_report_structure():
    z, y = mixed_case(400, 10, 4.0, 0.7, 5)
    report = temperature_scaling.calibration_report(z[:200], y[:200], torch.from_numpy(z[200:]), torch.from_numpy(y[200:]))
    assert set(report) == {"temperature", "before", "after"}
    assert report["temperature"] == temperature_scaling.fit_temperature(z[:200], y[:200])
    assert report["before"] == metrics.evaluate_all(z[200:], y[200:])
    after = metrics.evaluate_all(z[200:] / report["temperature"], y[200:])
    assert report["after"] == pytest.approx(after, abs=1e-12)
