"""Teacher-free losses (Tf-KD_reg, LSR-OS(-TC), MbLS, Zipf's LS) against their known reductions and against
independent NumPy float64 computations (docs/methods/lsr_os_tc.md §1.4, docs/methods/tfkd.md §2.2,
docs/methods/zipf_ls.md §6.3, docs/methods/margin_smoothing.md §6.6 and docs/methods/test_checklist.md §9)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlab.losses.cross_entropy import cross_entropy
from kdlab.losses.label_smoothing import label_smoothing
from kdlab.losses.targets import corrected_uniform_target, smoothed_labels
from kdlab.losses.teacher_free import lsr_os, lsr_os_tc, mbls, tfkd_reg
from kdlab.losses.zipf import zipf_ls, zipf_ranks

N, K = 12, 9
TOL = {"rel": 1e-6, "abs": 1e-9}


def _batch(n=N, k=K, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, k, (n,), generator=g)
    return z, y


def _grad(fn, z, *args, **kwargs):
    z = z.clone().requires_grad_(True)
    fn(z, *args, **kwargs).backward()
    return z.grad


# ---------------------------------------------------------------------------------------------------------------
# Independent NumPy float64 references (written from docs/methods/, not from the implementation).


def np_log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def np_kl_batchmean(t, log_q):
    t = np.asarray(t, dtype=np.float64)
    safe = np.where(t > 0, t, 1.0)
    return np.where(t > 0, t * (np.log(safe) - log_q), 0.0).sum(axis=1).mean()


def np_handmade_teacher(y, k, a):
    t = np.full((len(y), k), (1 - a) / (k - 1))
    t[np.arange(len(y)), y] = a
    return t


def np_tfkd_paper(z, y, alpha, tau, a):
    z, y = z.numpy(), y.numpy()
    teacher = np.exp(np_log_softmax(np.log(np_handmade_teacher(y, z.shape[1], a)) / tau))
    kd = np_kl_batchmean(teacher, np_log_softmax(z / tau))
    return (1 - alpha) * np_ce(z, y) + alpha * tau**2 * kd


def np_mbls(z, y, margin, lam):
    z, y = z.numpy(), y.numpy()
    d = z.max(axis=1, keepdims=True) - z
    return np_ce(z, y) + lam * np.maximum(d - margin, 0.0).mean()


def np_zipf_ls(z, y, ranks, lam, power):
    z, y, ranks = z.numpy(), y.numpy(), ranks.numpy()
    kl = []
    for i in range(len(y)):
        keep = np.arange(z.shape[1]) != y[i]
        w = (1.0 / ranks[i, keep].astype(np.float64)) ** power
        p = w / w.sum()
        log_s = np_log_softmax(z[i, keep][None])[0]
        kl.append((p * (np.log(p) - log_s)).sum())
    return np_ce(z, y) + lam * np.mean(kl)


def np_rank_min_descending(counts):
    """rank 1 = largest count; ties share the smallest rank (scipy rankdata 'min' on -counts)."""
    return np.array([[1 + int((row > c).sum()) for c in row] for row in counts])


# ---------------------------------------------------------------------------------------------------------------
# Targets


def test_corrected_uniform_target_values():
    _, y = _batch()
    beta = 0.3
    t = corrected_uniform_target(y, K, beta, dtype=torch.float64)
    assert torch.allclose(t.sum(1), torch.ones(N, dtype=torch.float64))
    assert torch.allclose(t[torch.arange(N), y], torch.full((N,), beta, dtype=torch.float64))
    np.testing.assert_allclose(t.numpy(), np_handmade_teacher(y.numpy(), K, beta), rtol=1e-12)
    assert torch.allclose(t, smoothed_labels(y, K, 1 - beta, "others", dtype=torch.float64))


def test_corrected_uniform_target_at_one_over_k_is_uniform():
    _, y = _batch()
    t = corrected_uniform_target(y, K, 1 / K, dtype=torch.float64)
    assert torch.allclose(t, torch.full((N, K), 1 / K, dtype=torch.float64), atol=1e-15)


@pytest.mark.parametrize("k, expected", [(100, 0.01050), (10, 0.1045)])
def test_tfkd_reference_teacher_correct_class_probability(k, expected):
    """docs/methods/lsr_os_tc.md §1.3 table: softmax(p^d / T) at a = 0.99, T = 20."""
    y = torch.tensor([0, k - 1])
    teacher = torch.softmax(corrected_uniform_target(y, k, 0.99, dtype=torch.float64) / 20.0, dim=1)
    assert teacher[torch.arange(2), y].numpy() == pytest.approx([expected, expected], abs=5e-5)


# ---------------------------------------------------------------------------------------------------------------
# LSR-OS / LSR-OS-TC reductions (docs/methods/lsr_os_tc.md §1.2, docs/methods/lsr_os_tc.md §1.4 and docs/methods/test_checklist.md §9)


@pytest.mark.parametrize("tau", [1.0, 2.5, 20.0])
def test_lsr_os_tc_uniform_teacher_is_lsr_os(tau):
    z, y = _batch()
    base = lsr_os(z, y, 0.3, tau).item()
    assert lsr_os_tc(z, y, 0.3, tau, beta=None).item() == pytest.approx(base, **TOL)
    assert lsr_os_tc(z, y, 0.3, tau, beta=1 / K).item() == pytest.approx(base, **TOL)
    assert torch.allclose(_grad(lsr_os_tc, z, y, 0.3, tau, beta=1 / K), _grad(lsr_os, z, y, 0.3, tau), atol=1e-12)


def test_lsr_os_at_tau_one_is_label_smoothing_minus_entropy_of_uniform():
    z, y = _batch()
    eps = 0.2
    ls = label_smoothing(z, y, eps, "uniform")
    assert lsr_os_tc(z, y, eps, 1.0, beta=1 / K).item() == pytest.approx(ls.item() - eps * math.log(K), **TOL)
    g_ls = _grad(label_smoothing, z, y, eps, "uniform")
    assert torch.allclose(_grad(lsr_os_tc, z, y, eps, 1.0, beta=1 / K), g_ls, atol=1e-12)
    assert torch.allclose(_grad(lsr_os, z, y, eps, 1.0), g_ls, atol=1e-12)


@pytest.mark.parametrize("beta", [0.2, 0.5, 0.9])
def test_lsr_os_tc_at_tau_one_is_lsr_with_effective_eps(beta):
    z, y = _batch()
    eps = 0.3
    eps_eff = eps * K * (1 - beta) / (K - 1)
    g_ls = _grad(label_smoothing, z, y, eps_eff, "uniform")
    assert torch.allclose(_grad(lsr_os_tc, z, y, eps, 1.0, beta=beta), g_ls, atol=1e-12)
    # Value: equal up to the constant eps * H(t_beta).
    h_t = -(beta * math.log(beta) + (1 - beta) * math.log((1 - beta) / (K - 1)))
    value = lsr_os_tc(z, y, eps, 1.0, beta=beta).item()
    assert value == pytest.approx(label_smoothing(z, y, eps_eff).item() - eps * h_t, **TOL)


@pytest.mark.parametrize("tau, beta", [(1.0, None), (4.0, 0.3), (20.0, 0.12), (0.7, 0.5)])
def test_lsr_os_tc_gradient_is_tau_times_p_tau_minus_teacher(tau, beta):
    z, y = _batch()
    eps = 0.4
    t = (
        torch.full((N, K), 1 / K, dtype=torch.float64)
        if beta is None
        else corrected_uniform_target(y, K, beta, torch.float64)
    )
    p, p_tau = torch.softmax(z, 1), torch.softmax(z / tau, 1)
    q = F.one_hot(y, K).double()
    expected = ((1 - eps) * (p - q) + eps * tau * (p_tau - t)) / N
    assert torch.allclose(_grad(lsr_os_tc, z, y, eps, tau, beta), expected, atol=1e-12)
    # Without tau^2 (ambiguity 1) the KL part's gradient is (p_tau - t) / tau.
    expected = ((1 - eps) * (p - q) + eps * (p_tau - t) / tau) / N
    assert torch.allclose(_grad(lsr_os_tc, z, y, eps, tau, beta, tau_squared=False), expected, atol=1e-12)


def test_lsr_os_tc_tau_squared_switch_scales_the_kl_part():
    z, y = _batch()
    eps, tau = 0.3, 6.0
    ce = (1 - eps) * cross_entropy(z, y).item()
    with_sq = lsr_os_tc(z, y, eps, tau, beta=0.4).item() - ce
    without = lsr_os_tc(z, y, eps, tau, beta=0.4, tau_squared=False).item() - ce
    assert with_sq == pytest.approx(without * tau**2, **TOL)


def test_lsr_os_tc_teacher_tau_softens_the_teacher_as_in_tfkd_code():
    z, y = _batch()
    eps, tau, beta, tt = 0.3, 5.0, 0.6, 3.0
    teacher = np.exp(np_log_softmax(np_handmade_teacher(y.numpy(), K, beta) / tt))
    expected = (1 - eps) * np_ce(z.numpy(), y.numpy()) + eps * tau**2 * np_kl_batchmean(
        teacher, np_log_softmax(z.numpy() / tau)
    )
    assert lsr_os_tc(z, y, eps, tau, beta=beta, teacher_tau=tt).item() == pytest.approx(expected, **TOL)


def test_lsr_os_large_tau_is_half_logit_variance():
    z, y = _batch(scale=1.0)
    eps, tau = 0.5, 1e3
    kl_part = (lsr_os(z, y, eps, tau) - (1 - eps) * cross_entropy(z, y)).item() / eps
    half_var = 0.5 * z.numpy().var(axis=1).mean()  # population variance over classes, mean over the batch
    assert kl_part == pytest.approx(half_var, rel=1e-4)  # O(1/tau) correction: ~2e-5 here


# ---------------------------------------------------------------------------------------------------------------
# Tf-KD_reg (docs/methods/tfkd.md §2.2)


@pytest.mark.parametrize("alpha, tau, a", [(0.1, 20.0, 0.99), (0.95, 40.0, 0.9), (0.5, 1.0, 0.3)])
def test_tfkd_reg_paper_mode_matches_numpy(alpha, tau, a):
    z, y = _batch()
    assert tfkd_reg(z, y, alpha, tau, a).item() == pytest.approx(np_tfkd_paper(z, y, alpha, tau, a), **TOL)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # the repo's default reduction, on purpose
@pytest.mark.parametrize("multiplier", [1.0, 50.0, 100.0])
def test_tfkd_reg_reference_mode_is_one_over_k_of_batchmean_kl(multiplier):
    z, y = _batch(k=100, seed=1)
    alpha, tau = 0.1, 20.0
    zn, yn = z.numpy(), y.numpy()
    teacher = np.exp(np_log_softmax(np_handmade_teacher(yn, 100, 0.99) / tau))  # softmax of the probabilities
    kl = np_kl_batchmean(teacher, np_log_softmax(zn))  # student NOT softened, no tau^2
    value = tfkd_reg(z, y, alpha, tau, 0.99, mode="reference", multiplier=multiplier).item()
    reg_part = value - (1 - alpha) * np_ce(zn, yn)
    assert reg_part == pytest.approx(alpha * multiplier * kl / 100, **TOL)
    # And literally the repo's nn.KLDivLoss() (reduction='mean', /(N*K)).
    torch_mean = torch.nn.KLDivLoss()(F.log_softmax(z, 1), torch.from_numpy(teacher)).item()
    assert reg_part == pytest.approx(alpha * multiplier * torch_mean, **TOL)
    if multiplier == 100.0:  # docs/methods/tfkd.md §2.2: ResNet18, m = 100, K = 100 gives 0.1 x KL
        assert reg_part == pytest.approx(0.1 * kl, **TOL)


def test_tfkd_reg_alpha_zero_is_cross_entropy():
    z, y = _batch()
    for mode in ("paper", "reference"):
        assert tfkd_reg(z, y, alpha=0.0, mode=mode).item() == pytest.approx(cross_entropy(z, y).item(), **TOL)


# ---------------------------------------------------------------------------------------------------------------
# MbLS (docs/methods/margin_smoothing.md §6.6) and Zipf's LS (docs/methods/zipf_ls.md §6.3)


@pytest.mark.parametrize("margin, lam", [(10.0, 0.1), (2.0, 0.5), (0.0, 1.0)])
def test_mbls_matches_numpy(margin, lam):
    z, y = _batch(scale=6.0)
    assert mbls(z, y, margin, lam).item() == pytest.approx(np_mbls(z, y, margin, lam), **TOL)


def test_mbls_below_margin_is_cross_entropy():
    z, y = _batch(scale=0.5)
    assert mbls(z, y, margin=10.0).item() == pytest.approx(cross_entropy(z, y).item(), **TOL)


def test_zipf_ranks_ties_share_the_minimum_rank():
    # sample 0 votes (6 positions): classes 0, 0, 2, 2, 1, 4 -> counts [2, 1, 2, 0, 1]
    # sample 1: every position votes class 3               -> counts [0, 0, 0, 6, 0]
    votes = torch.tensor([[0, 0, 2, 2, 1, 4], [3, 3, 3, 3, 3, 3]])
    dense = F.one_hot(votes, 5).permute(0, 2, 1).reshape(2, 5, 2, 3).double() * 2.0 - 1.0
    ranks = zipf_ranks(dense)
    assert ranks.dtype == torch.int64
    assert ranks.tolist() == [[1, 3, 1, 5, 3], [2, 2, 2, 1, 2]]


def test_zipf_ranks_match_min_rank_reference_on_random_votes():
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(6, 7, 3, 4, generator=g)
    counts = F.one_hot(dense.argmax(1).reshape(6, -1), 7).sum(1).numpy()
    assert zipf_ranks(dense).numpy().tolist() == np_rank_min_descending(counts).tolist()


@pytest.mark.parametrize("lam, power", [(0.1, 1.0), (1.0, 2.0), (0.3, 0.5)])
def test_zipf_ls_matches_numpy(lam, power):
    z, y = _batch()
    g = torch.Generator().manual_seed(5)
    ranks = zipf_ranks(torch.randn(N, K, 4, 4, generator=g))
    assert zipf_ls(z, y, ranks, lam, power).item() == pytest.approx(np_zipf_ls(z, y, ranks, lam, power), **TOL)


def test_zipf_ls_target_carries_no_gradient_and_ignores_true_logit_in_kl():
    z, y = _batch()
    ranks = torch.randint(1, K + 1, (N, K))
    g_zipf = _grad(zipf_ls, z, y, ranks, 0.7)
    g_ce = _grad(cross_entropy, z, y)
    # The KL part does not touch the true-class logit.
    assert torch.allclose(g_zipf[torch.arange(N), y], g_ce[torch.arange(N), y], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Precision


def test_dtypes_float64_kept_and_low_precision_upcast():
    z, y = _batch()
    ranks = torch.randint(1, K + 1, (N, K))
    calls = [
        lambda z: tfkd_reg(z, y),
        lambda z: tfkd_reg(z, y, mode="reference"),
        lambda z: lsr_os(z, y, 0.1, 4.0),
        lambda z: lsr_os_tc(z, y, 0.1, 4.0, 0.3, teacher_tau=2.0),
        lambda z: mbls(z, y),
        lambda z: zipf_ls(z, y, ranks),
    ]
    for call in calls:
        assert call(z).dtype == torch.float64
        assert call(z.bfloat16()).dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = call(z.float() @ torch.eye(K))  # bf16 under autocast
        assert out.dtype == torch.float32 and out.ndim == 0


# ---------------------------------------------------------------------------------------------------------------
# Invalid arguments


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda z, y: lsr_os_tc(z, y, eps=-0.1), "eps"),
        (lambda z, y: lsr_os_tc(z, y, eps=1.0), "eps"),
        (lambda z, y: lsr_os(z, y, eps=1.5), "eps"),
        (lambda z, y: lsr_os_tc(z, y, tau=0.0), "tau"),
        (lambda z, y: lsr_os(z, y, tau=-1.0), "tau"),
        (lambda z, y: lsr_os_tc(z, y, beta=1 / K - 0.01), "beta"),
        (lambda z, y: lsr_os_tc(z, y, beta=1.0), "beta"),
        (lambda z, y: lsr_os_tc(z, y, tau=2.0, beta=0.5, teacher_tau=0.0), "teacher_tau"),
        (lambda z, y: tfkd_reg(z, y, a=0.0), "a must"),
        (lambda z, y: tfkd_reg(z, y, a=1.0), "a must"),
        (lambda z, y: tfkd_reg(z, y, a=1.2), "a must"),
        (lambda z, y: tfkd_reg(z, y, a=0.05), "a must"),  # below 1/K
        (lambda z, y: tfkd_reg(z, y, mode="code"), "mode"),
        (lambda z, y: tfkd_reg(z, y, tau=0.0), "tau"),
        (lambda z, y: tfkd_reg(z, y, alpha=1.5), "alpha"),
        (lambda z, y: tfkd_reg(z, y, mode="reference", multiplier=-1.0), "multiplier"),
        (lambda z, y: mbls(z, y, margin=-1.0), "margin"),
        (lambda z, y: mbls(z, y, lam=-0.1), "lam"),
        (lambda z, y: zipf_ls(z, y, torch.ones(N, K, dtype=torch.int64), lam=-1.0), "lam"),
        (lambda z, y: zipf_ls(z, y, torch.ones(N, K, dtype=torch.int64), power=-1.0), "power"),
        (lambda z, y: zipf_ls(z, y, torch.ones(N, K - 1, dtype=torch.int64)), "ranks"),
        (lambda z, y: zipf_ls(z, y, torch.zeros(N, K, dtype=torch.int64)), "ranks"),
        (lambda z, y: zipf_ranks(z), "dense_logits"),
        (lambda z, y: corrected_uniform_target(y, K, 0.0), "beta"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(call, name):
    z, y = _batch()
    with pytest.raises(ValueError, match=name):
        call(z, y)


# ---------------------------------------------------------------------------------------------------------------
# Properties over shapes and temperatures


@st.composite
def problems(draw):
    n = draw(st.integers(1, 8))
    k = draw(st.integers(2, 20))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.1, 10.0))
    tau = draw(st.floats(0.5, 30.0))
    eps = draw(st.floats(0.0, 0.99))
    beta = draw(st.floats(1.0 / k, 0.999))
    z, y = _batch(n, k, scale, seed)
    return z, y, tau, eps, beta


@settings(max_examples=60, deadline=None)
@given(problems())
def test_property_lsr_os_tc(problem):
    z, y, tau, eps, beta = problem
    n, k = z.shape
    ce = cross_entropy(z, y).item()
    value = lsr_os_tc(z, y, eps, tau, beta).item()
    assert math.isfinite(value)
    assert value >= (1 - eps) * ce - 1e-9
    assert lsr_os_tc(z, y, eps, tau, 1.0 / k).item() == pytest.approx(lsr_os(z, y, eps, tau).item(), **TOL)
    t = corrected_uniform_target(y, k, beta, torch.float64)
    q = F.one_hot(y, k).double()
    expected = ((1 - eps) * (torch.softmax(z, 1) - q) + eps * tau * (torch.softmax(z / tau, 1) - t)) / n
    assert torch.allclose(_grad(lsr_os_tc, z, y, eps, tau, beta), expected, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(problems(), st.floats(0.0, 1.0), st.floats(0.51, 0.999))
def test_property_tfkd_reg_and_mbls_and_zipf(problem, alpha, a):
    z, y, tau, _, _ = problem
    ce = cross_entropy(z, y).item()
    paper = tfkd_reg(z, y, alpha, tau, a).item()
    assert paper == pytest.approx(np_tfkd_paper(z, y, alpha, tau, a), **TOL)
    assert paper >= (1 - alpha) * ce - 1e-9
    reference = tfkd_reg(z, y, alpha, tau, a, mode="reference", multiplier=10.0).item()
    assert math.isfinite(reference) and reference >= (1 - alpha) * ce - 1e-9
    assert mbls(z, y, margin=tau / 10).item() >= ce - 1e-12
    ranks = zipf_ranks(z[:, :, None, None].expand(-1, -1, 2, 2))
    assert zipf_ls(z, y, ranks).item() >= ce - 1e-12
