"""Foundation metrics against independent computations."""

import numpy as np
import pytest
import torch

from kdlab import metrics


def reference_ece(logits: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al.'s loop: right-closed bins (lower, upper], empty bins skipped."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, pred = p.max(1), p.argmax(1)
    acc = (pred == labels).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(acc[in_bin].mean() - conf[in_bin].mean())
    return total


def test_accuracy_and_nll_values():
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    y = torch.tensor([0, 0, 0])
    assert metrics.accuracy(z, y) == pytest.approx(2 / 3)
    p = torch.softmax(z.double(), 1)[:, 0]
    assert metrics.nll(z, y) == pytest.approx(-torch.log(p).mean().item())
    assert metrics.accuracy(z.numpy(), y.numpy()) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(500, 10)) * rng.uniform(0.5, 5)
    labels = rng.integers(0, 10, 500)
    assert metrics.ece(logits, labels) == pytest.approx(reference_ece(logits, labels), abs=1e-9)
    assert metrics.ece(logits, labels, n_bins=7) == pytest.approx(reference_ece(logits, labels, 7), abs=1e-9)


def test_ece_of_calibrated_predictions_is_near_zero():
    rng = np.random.default_rng(0)
    n, k = 200_000, 5
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in p[:20000]])
    assert metrics.ece(logits[:20000], labels) < 0.02


def test_ece_bins_are_right_closed():
    # With 4 bins, confidence exactly 0.5 (a tie) belongs to (0.25, 0.5], apart from a 0.7 in (0.5, 0.75]:
    # ECE = 0.5 * |1 - 0.5| + 0.5 * |0 - 0.7| = 0.6 (it would be 0.1 if the two shared a bin).
    logits = np.array([[0.0, 0.0], np.log([0.7, 0.3])])
    assert metrics.ece(logits, np.array([0, 1]), n_bins=4) == pytest.approx(0.6)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        metrics.accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
