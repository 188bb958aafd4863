"""Metrics against independent computations (plain NumPy loops) and torchmetrics."""

import itertools

import numpy as np
import pytest
import torch
import torchmetrics.functional.classification as tmf

from kdlab import metrics


def reference_ece(logits: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al.'s loop: right-closed bins (lower, upper], empty bins skipped."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, pred = p.max(1), p.argmax(1)
    acc = (pred == labels).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
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


# ---------------------------------------------------------------------------------------------------------------
# Further metrics: independent NumPy references (plain loops), hand cases, invariances, torchmetrics equivalence.
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _one_thread():
    # A background job shares the CPU: torch's intra-op threads only add contention for these small tensors.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    s = z - z.max(1, keepdims=True)
    return s - np.log(np.exp(s).sum(1, keepdims=True))


def reference_topk(z, y, k):
    hits = 0
    for row, label in zip(z, y):
        hits += label in np.argsort(-row, kind="stable")[: min(k, len(row))]
    return hits / len(y)


def reference_brier(z, y):
    p = np_softmax(z)
    total = 0.0
    for i in range(len(y)):
        for k in range(z.shape[1]):
            total += (p[i, k] - (1.0 if k == y[i] else 0.0)) ** 2
    return total / len(y)


def reference_mce(z, y, n_bins=15):
    p = np_softmax(z)
    conf, acc = p.max(1), (p.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    gaps = []
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gaps.append(abs(acc[in_bin].mean() - conf[in_bin].mean()))
    return max(gaps)


def reference_adaptive_ece(z, y, n_bins=15):
    """MbLS AdaptiveECELoss, step by step: np.histogram with the interpolated equal-mass edges, (lo, hi] loop."""
    p = np_softmax(z)
    conf, acc = p.max(1), (p.argmax(1) == y).astype(float)
    n = len(conf)
    edges = np.interp(np.linspace(0, n, n_bins + 1), np.arange(n), np.sort(conf))
    _, edges = np.histogram(conf, edges)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.mean() > 0:
            total += in_bin.mean() * abs(acc[in_bin].mean() - conf[in_bin].mean())
    return total


def reference_classwise_ece(z, y, n_bins=15):
    """Per class k, ECE of p_k against 1[y = k] with (lo, hi] bins, except that the first bin is [0, hi]."""
    p = np_softmax(z)
    edges = np.linspace(0, 1, n_bins + 1)
    per_class = []
    for k in range(z.shape[1]):
        pk, hit = p[:, k], (y == k).astype(float)
        total = 0.0
        for m, (lo, hi) in enumerate(itertools.pairwise(edges)):
            in_bin = ((pk > lo) | (m == 0)) & (pk <= hi)
            if in_bin.any():
                total += in_bin.mean() * abs(hit[in_bin].mean() - pk[in_bin].mean())
        per_class.append(total)
    return float(np.mean(per_class))


def reference_agreement(z, zt):
    return float(np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(z, zt)]))


def reference_fidelity_kl(z, zt, tau=1.0):
    log_p, log_q = np_log_softmax(z / tau), np_log_softmax(zt / tau)
    return float(np.mean([np.sum(np.exp(lq) * (lq - lp)) for lp, lq in zip(log_p, log_q)]))


CASES = [(1, 3, 1.0), (7, 2, 0.3), (64, 4, 3.0), (500, 10, 1.0), (500, 10, 6.0), (300, 100, 2.0), (200, 7, 0.05)]


def random_case(n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * scale
    # Mix of correct and random labels so that accuracy, and so every calibration gap, is non-trivial.
    labels = np.where(rng.random(n) < 0.6, logits.argmax(1), rng.integers(0, k, n))
    return logits, labels


@pytest.mark.parametrize("n,k,scale", CASES)
def test_label_metrics_match_numpy_references(n, k, scale):
    for seed in range(2):
        z, y = random_case(n, k, scale, seed)
        for kk in (1, 2, 5, k + 3):
            assert metrics.topk_accuracy(z, y, k=kk) == pytest.approx(reference_topk(z, y, kk), abs=1e-12)
        assert metrics.brier(z, y) == pytest.approx(reference_brier(z, y), abs=1e-9)
        assert metrics.nll(z, y) == pytest.approx(-np.mean(np_log_softmax(z)[np.arange(n), y]), abs=1e-9)
        for n_bins in (15, 4):
            assert metrics.ece(z, y, n_bins) == pytest.approx(reference_ece(z, y, n_bins), abs=1e-9)
            assert metrics.mce(z, y, n_bins) == pytest.approx(reference_mce(z, y, n_bins), abs=1e-9)
            assert metrics.adaptive_ece(z, y, n_bins) == pytest.approx(reference_adaptive_ece(z, y, n_bins), abs=1e-9)
            assert metrics.classwise_ece(z, y, n_bins) == pytest.approx(
                reference_classwise_ece(z, y, n_bins), abs=1e-9
            )


@pytest.mark.parametrize("n,k,scale", CASES)
def test_fidelity_metrics_match_numpy_references(n, k, scale):
    rng = np.random.default_rng(n + k)
    zt = rng.normal(size=(n, k)) * scale
    z = zt + rng.normal(size=(n, k)) * scale * 0.7
    assert metrics.agreement(z, zt) == pytest.approx(reference_agreement(z, zt), abs=1e-12)
    for tau in (1.0, 4.0, 0.5):
        assert metrics.fidelity_kl(z, zt, tau=tau) == pytest.approx(reference_fidelity_kl(z, zt, tau), abs=1e-9)


def test_classwise_ece_chunking_over_many_classes():
    # 30000 x 100 makes classwise_ece run over several chunks of classes.
    z, y = random_case(30000, 100, 2.0, 0)
    assert metrics.classwise_ece(z, y) == pytest.approx(reference_classwise_ece(z, y), abs=1e-9)


def test_hand_computed_values():
    z = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    y = np.array([1, 0])
    assert metrics.topk_accuracy(z, y, k=1) == 0.0
    assert metrics.topk_accuracy(z, y, k=2) == 0.5
    assert metrics.topk_accuracy(z, y, k=3) == 1.0
    assert metrics.topk_accuracy(z, y, k=50) == 1.0

    assert metrics.brier(np.zeros((1, 2)), np.array([0])) == pytest.approx(0.5)  # 0.5^2 + 0.5^2
    assert metrics.brier(np.array([[0.0, 100.0]]), np.array([0])) == pytest.approx(2.0)
    assert metrics.brier(np.log([[0.7, 0.2, 0.1]]), np.array([0])) == pytest.approx(0.09 + 0.04 + 0.01)

    # MCE, 4 bins: a correct tie at 0.5 in (0.25, 0.5] (gap 0.5) and a wrong 0.7 in (0.5, 0.75] (gap 0.7).
    tie_case = np.array([[0.0, 0.0], np.log([0.7, 0.3])])
    assert metrics.mce(tie_case, np.array([0, 1]), n_bins=4) == pytest.approx(0.7)

    # Adaptive ECE, 2 bins, confidences 0.6, 0.7, 0.8, 0.9, all correct: edges interp([0, 2, 4]) = [0.6, 0.8, 0.9],
    # bins (0.6, 0.8] = {0.7, 0.8} and (0.8, 0.9] = {0.9}; 0.6 (the minimum) is in no bin but counts in n = 4.
    conf = np.array([0.6, 0.7, 0.8, 0.9])
    logits = np.log(np.stack([conf, 1 - conf], 1))
    expected = 2 / 4 * abs(1 - 0.75) + 1 / 4 * abs(1 - 0.9)
    assert metrics.adaptive_ece(logits, np.zeros(4, int), n_bins=2) == pytest.approx(expected)
    # ... and a single sample is in no bin at all.
    assert metrics.adaptive_ece(np.array([[2.0, 0.0]]), np.array([1])) == 0.0

    # Classwise ECE, 2 bins: p = (0.7, 0.3) twice, labels 0 and 1. Class 0: 0.7 in (0.5, 1], |0.5 - 0.7|;
    # class 1: 0.3 in (0, 0.5], |0.5 - 0.3|; mean 0.2.
    two = np.log([[0.7, 0.3], [0.7, 0.3]])
    assert metrics.classwise_ece(two, np.array([0, 1]), n_bins=2) == pytest.approx(0.2)

    # Agreement and predictive KL.
    s = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    t = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    assert metrics.agreement(s, t) == pytest.approx(1 / 3)
    kl = 0.8 * np.log(0.8 / 0.5) + 0.2 * np.log(0.2 / 0.5)
    assert metrics.fidelity_kl(np.zeros((1, 2)), np.log([[0.8, 0.2]])) == pytest.approx(kl)


def test_classwise_ece_puts_zero_probability_in_the_first_bin():
    # p_1 = exp(-1e4) underflows to exactly 0 and the label is 1. Class 0: p_0 = 1, 1[y = 0] = 0, gap 1.
    # Class 1: p_1 = 0 goes to bin [0, 1/15], 1[y = 1] = 1, gap 1. Mean 1 (MbLS would drop it: 0.5).
    z = np.array([[0.0, -1e4]])
    assert torch.softmax(torch.tensor(z), 1)[0, 1].item() == 0.0
    assert metrics.classwise_ece(z, np.array([1])) == pytest.approx(1.0)


def test_invariances():
    z, y = random_case(400, 10, 2.0, 3)
    assert metrics.agreement(z, z) == 1.0
    assert metrics.fidelity_kl(z, z) == 0.0
    assert metrics.fidelity_kl(z, z, tau=3.0) == 0.0
    rng = np.random.default_rng(1)
    for _ in range(5):
        other = rng.normal(size=z.shape) * rng.uniform(0.1, 10)
        assert metrics.fidelity_kl(z, other) >= 0.0
        assert metrics.fidelity_kl(z, other, tau=2.0) == pytest.approx(metrics.fidelity_kl(z / 2, other / 2), abs=1e-12)
    # Softmax metrics do not change when a constant is added to each row.
    shifted = z + rng.normal(size=(400, 1)) * 50
    for name in ("accuracy", "nll", "brier", "ece", "adaptive_ece", "classwise_ece", "mce", "topk_accuracy"):
        fn = getattr(metrics, name)
        assert fn(shifted, y) == pytest.approx(fn(z, y), abs=1e-9), name
    assert metrics.fidelity_kl(shifted, z) == pytest.approx(0.0, abs=1e-12)
    # A perfect, confident prediction scores ~0 everywhere.
    perfect = np.eye(5)[y % 5] * 60.0
    for name in ("nll", "brier", "ece", "adaptive_ece", "classwise_ece", "mce"):
        assert getattr(metrics, name)(perfect, y % 5) == pytest.approx(0.0, abs=1e-12), name
    assert metrics.topk_accuracy(z, y, k=10) == 1.0
    assert metrics.topk_accuracy(z, y, k=1) == metrics.accuracy(z, y)


def test_torch_and_numpy_inputs_agree():
    z, y = random_case(200, 10, 2.0, 4)
    zt = z[::-1].copy()
    for name in ("accuracy", "nll", "brier", "ece", "adaptive_ece", "classwise_ece", "mce", "topk_accuracy"):
        fn = getattr(metrics, name)
        value = fn(z, y)
        assert isinstance(value, float)
        assert fn(torch.from_numpy(z), torch.from_numpy(y)) == value
        assert fn(torch.from_numpy(z).requires_grad_(), list(y)) == value
    assert metrics.fidelity_kl(torch.from_numpy(z), zt) == metrics.fidelity_kl(z, zt)
    # float32 tensors are widened exactly, so they match the float64 computation on the same float32 values.
    z32 = torch.from_numpy(z).float()
    assert metrics.brier(z32, y) == metrics.brier(z32.double().numpy(), y)


def test_evaluate_all_and_fidelity_all():
    z, y = random_case(300, 10, 2.0, 5)
    out = metrics.evaluate_all(z, y)
    assert list(out) == ["acc", "top5", "nll", "brier", "ece", "adaptive_ece", "classwise_ece", "mce"]
    assert out["top5"] == metrics.topk_accuracy(z, y, 5)
    assert out["adaptive_ece"] == metrics.adaptive_ece(z, y)
    assert all(isinstance(v, float) for v in out.values())
    assert "top5" not in metrics.evaluate_all(z[:, :5], y % 5)
    both = metrics.fidelity_all(z, z[::-1])
    assert both == {"agreement": metrics.agreement(z, z[::-1]), "fidelity_kl": metrics.fidelity_kl(z, z[::-1])}
    assert set(metrics.__all__) >= {
        "accuracy", "nll", "ece", "topk_accuracy", "brier", "adaptive_ece", "classwise_ece", "mce", "agreement",
        "fidelity_kl", "evaluate_all", "fidelity_all",
    }


def test_input_errors():
    z = np.zeros((4, 3))
    y = np.zeros(4, int)
    with pytest.raises(ValueError, match="same shape"):
        metrics.agreement(z, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same shape"):
        metrics.fidelity_kl(z, np.zeros((5, 3)))
    with pytest.raises(ValueError):
        metrics.agreement(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError):
        metrics.brier(z, np.zeros(3, int))
    with pytest.raises(ValueError):
        metrics.ece(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError, match="labels must lie"):
        metrics.nll(z, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="labels must lie"):
        metrics.brier(z, np.array([0, -1, 2, 0]))
    with pytest.raises(ValueError):
        metrics.topk_accuracy(z, y, k=0)
    for fn in (metrics.ece, metrics.mce, metrics.adaptive_ece, metrics.classwise_ece):
        with pytest.raises(ValueError):
            fn(z, y, n_bins=0)
    for tau in (0.0, -1.0, float("inf"), "x"):
        with pytest.raises(ValueError):
            metrics.fidelity_kl(z, z, tau=tau)


# --- torchmetrics ------------------------------------------------------------------------------------------------


def unsaturated_case(n, k, scale, seed):
    """Random logits whose top-1 confidences stay below 1 - 1e-6 and away from the interior edges m/15."""
    z, y = random_case(n, k, scale, seed)
    conf = np_softmax(z).max(1)
    assert conf.max() < 1 - 1e-6
    assert np.abs(conf[:, None] - np.arange(1, 15)[None] / 15).min() > 1e-6
    return z, y


def tm_calibration_error(z, y, norm, n_bins=15):
    probs = torch.softmax(torch.from_numpy(z), 1)
    return tmf.multiclass_calibration_error(
        probs, torch.from_numpy(y), num_classes=z.shape[1], n_bins=n_bins, norm=norm
    ).item()


@pytest.mark.parametrize(
    "n,k,scale,seed", [(1000, 10, 1.0, 0), (1000, 10, 2.5, 1), (500, 100, 1.5, 2), (300, 3, 0.7, 3)]
)
def test_ece_and_mce_equal_torchmetrics_away_from_edges(n, k, scale, seed):
    z, y = unsaturated_case(n, k, scale, seed)
    assert metrics.ece(z, y) == pytest.approx(tm_calibration_error(z, y, "l1"), abs=1e-6)
    assert metrics.mce(z, y) == pytest.approx(tm_calibration_error(z, y, "max"), abs=1e-6)


def test_ece_differs_from_torchmetrics_on_edges_and_saturation():
    # A confidence exactly on an edge: torchmetrics' bins are left-closed, so the correct tie at 0.5 shares
    # [0.5, 0.75) with the wrong 0.7: 1.0 * |0.5 - 0.6| = 0.1, where our right-closed bins give 0.6.
    z = np.array([[0.0, 0.0], np.log([0.7, 0.3])])
    y = np.array([0, 1])
    assert metrics.ece(z, y, n_bins=4) == pytest.approx(0.6)
    assert tm_calibration_error(z, y, "l1", n_bins=4) == pytest.approx(0.1, abs=1e-6)
    # Saturated confidence: conf = 1 - 1e-9 is 1.0 in float32, which torchmetrics puts in an extra bin of its own.
    # Wrong at ~1.0 and right at 0.95: ours one bin (14/15, 1], |0.5 - 0.975| = 0.475; torchmetrics
    # 0.5 * |0 - 1| + 0.5 * |1 - 0.95| = 0.525.
    z = np.array([[np.log(1 - 1e-9), np.log(1e-9)], np.log([0.95, 0.05])])
    y = np.array([1, 0])
    assert metrics.ece(z, y) == pytest.approx(0.475, abs=1e-8)
    assert tm_calibration_error(z, y, "l1") == pytest.approx(0.525, abs=1e-6)


@pytest.mark.parametrize("n,k,scale,seed", [(1000, 10, 1.0, 0), (500, 100, 3.0, 1), (200, 6, 0.5, 2)])
def test_topk_accuracy_equals_torchmetrics(n, k, scale, seed):
    z, y = random_case(n, k, scale, seed)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    for top_k in (1, 2, 5):
        expected = tmf.multiclass_accuracy(zt, yt, num_classes=k, top_k=top_k, average="micro").item()
        assert metrics.topk_accuracy(z, y, k=top_k) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_binned_metrics_with_many_tied_confidences(seed):
    # Small-integer logits repeat the same confidences many times: repeated adaptive edges, empty bins, ties.
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, size=(300, 3)).astype(float)
    y = rng.integers(0, 3, 300)
    for n_bins in (15, 5):
        assert metrics.ece(z, y, n_bins) == pytest.approx(reference_ece(z, y, n_bins), abs=1e-9)
        assert metrics.mce(z, y, n_bins) == pytest.approx(reference_mce(z, y, n_bins), abs=1e-9)
        assert metrics.adaptive_ece(z, y, n_bins) == pytest.approx(reference_adaptive_ece(z, y, n_bins), abs=1e-9)
        assert metrics.classwise_ece(z, y, n_bins) == pytest.approx(reference_classwise_ece(z, y, n_bins), abs=1e-9)
    assert metrics.agreement(z, z[::-1]) == pytest.approx(reference_agreement(z, z[::-1]), abs=1e-12)
