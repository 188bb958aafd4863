"""The distillation losses (KD-KL, KD-MSE, reverse KL, DKD) against independent NumPy float64 computations, their
analytic gradients and known identities (docs/methods/kd.md §4, docs/methods/dkd.md §6.9 and
docs/methods/test_checklist.md §9)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlab.losses.cross_entropy import cross_entropy
from kdlab.losses.distillation import kd_kl, kd_mse, kd_reverse_kl
from kdlab.losses.dkd import dkd, dkd_parts

N, K = 12, 9


def make(n=N, k=K, seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, k, generator=g, dtype=torch.float64) * scale).to(dtype)
    zt = (torch.randn(n, k, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, k, (n,), generator=g)
    return z, zt, y


# ---- independent NumPy float64 references -------------------------------------------------------------------------


def np_log_softmax(a):
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def np_kl_rows(p_logits, q_logits):
    """Per-row KL(softmax(p_logits) || softmax(q_logits))."""
    lp, lq = np_log_softmax(p_logits), np_log_softmax(q_logits)
    return (np.exp(lp) * (lp - lq)).sum(axis=1)


def np_dkd_mdistiller(z, zt, y, alpha, beta, tau):
    """mdistiller ``dkd_loss`` semantics, including its -1000 shift of the target logit for NCKD."""
    n = len(y)
    gt = np.zeros_like(z)
    gt[np.arange(n), y] = 1.0
    ps, pt = np.exp(np_log_softmax(z / tau)), np.exp(np_log_softmax(zt / tau))
    bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum() * tau**2 / n
    lpt2 = np_log_softmax(zt / tau - 1000.0 * gt)
    lps2 = np_log_softmax(z / tau - 1000.0 * gt)
    pt2 = np.exp(lpt2)
    nckd = np.where(pt2 > 0, pt2 * (lpt2 - lps2), 0.0).sum() * tau**2 / n
    return alpha * tckd + beta * nckd


def np_args(z, zt, y):
    return z.double().numpy(), zt.double().numpy(), y.numpy()


# ---- kd_kl -----------------------------------------------------------------------------------------------------------


def test_kd_kl_of_identical_logits_is_zero_with_zero_gradient():
    z, _, y = make(dtype=torch.float64)
    z.requires_grad_(True)
    loss = kd_kl(z, z.detach().clone(), y, alpha=1.0, tau=4.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(z.grad, torch.zeros_like(z), atol=1e-12)


@pytest.mark.parametrize("alpha,tau", [(0.9, 4.0), (0.3, 1.0), (0.5, 0.5), (1.0, 20.0)])
def test_kd_kl_gradient_matches_closed_form(alpha, tau):
    z, zt, y = make(dtype=torch.float64)
    z.requires_grad_(True)
    kd_kl(z, zt, y, alpha, tau).backward()
    p, q = torch.softmax(z.detach(), 1), F.one_hot(y, K).double()
    p_tau, pt_tau = torch.softmax(z.detach() / tau, 1), torch.softmax(zt / tau, 1)
    expected = (1 - alpha) * (p - q) / N + alpha * tau * (p_tau - pt_tau) / N
    assert torch.allclose(z.grad, expected, atol=1e-12)


def test_kd_kl_alpha_zero_is_cross_entropy():
    z, zt, y = make()
    assert torch.equal(kd_kl(z, zt, y, alpha=0.0), cross_entropy(z, y))


@pytest.mark.parametrize("alpha,tau", [(0.9, 4.0), (0.1, 5.0), (0.5, 0.5), (1.0, 20.0)])
def test_kd_kl_matches_numpy(alpha, tau):
    z, zt, y = make(seed=1)
    zn, ztn, yn = np_args(z, zt, y)
    expected = (1 - alpha) * np_ce(zn, yn) + alpha * tau**2 * np_kl_rows(ztn / tau, zn / tau).mean()
    assert kd_kl(z.double(), zt.double(), y, alpha, tau).item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert kd_kl(z, zt, y, alpha, tau).item() == pytest.approx(expected, rel=1e-5)  # float32 path


@pytest.mark.parametrize("loss", [kd_kl, kd_mse, kd_reverse_kl, dkd])
def test_teacher_gets_no_gradient(loss):
    z, zt, y = make()
    z.requires_grad_(True)
    zt.requires_grad_(True)
    loss(z, zt, y).backward()
    assert zt.grad is None
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", [kd_kl, kd_mse, kd_reverse_kl, dkd])
def test_dtypes_float32_under_autocast_and_float64_kept(loss):
    z, zt, y = make()
    lin = torch.nn.Linear(K, K)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zb = lin(z)
        assert zb.dtype == torch.bfloat16
        assert loss(zb, zt.bfloat16(), y).dtype == torch.float32
    assert loss(z.double(), zt, y).dtype == torch.float64
    assert loss(z.double(), zt.double(), y).dtype == torch.float64


# ---- kd_mse ----------------------------------------------------------------------------------------------------------


def test_kd_mse_alpha_one_is_torch_mse_loss():
    z, zt, y = make(seed=2)
    assert torch.equal(kd_mse(z, zt, y), F.mse_loss(z, zt))
    assert torch.equal(kd_mse(z, zt, y, alpha=1.0), F.mse_loss(z, zt))


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.7])
def test_kd_mse_matches_numpy(alpha):
    z, zt, y = make(seed=3, dtype=torch.float64)
    zn, ztn, yn = np_args(z, zt, y)
    expected = (1 - alpha) * np_ce(zn, yn) + alpha * ((zn - ztn) ** 2).mean()
    assert kd_mse(z, zt, y, alpha).item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


# ---- kd_reverse_kl ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,tau", [(0.9, 4.0), (0.4, 1.0), (1.0, 0.5), (0.0, 2.0)])
def test_kd_reverse_kl_matches_numpy(alpha, tau):
    z, zt, y = make(seed=4)
    zn, ztn, yn = np_args(z, zt, y)
    expected = (1 - alpha) * np_ce(zn, yn) + alpha * tau**2 * np_kl_rows(zn / tau, ztn / tau).mean()
    assert kd_reverse_kl(z.double(), zt.double(), y, alpha, tau).item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert kd_reverse_kl(z, zt, y, alpha, tau).item() == pytest.approx(expected, rel=1e-5)


def test_kd_reverse_kl_differs_from_forward():
    z, zt, y = make(seed=5, dtype=torch.float64)
    assert abs(kd_reverse_kl(z, zt, y, 1.0) - kd_kl(z, zt, y, 1.0)).item() > 1e-3


@pytest.mark.parametrize("alpha,tau", [(1.0, 4.0), (0.6, 1.5)])
def test_kd_reverse_kl_gradcheck(alpha, tau):
    z, zt, y = make(n=4, k=5, seed=6, dtype=torch.float64)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: kd_reverse_kl(s, zt, y, alpha, tau), (z,))


# ---- DKD -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1.0, 4.0, 0.5])
def test_dkd_identity_per_sample(tau):
    """TCKD + (1 - p^t_y(tau)) NCKD == tau^2 KL(p^t_tau || p^s_tau), for each sample on its own
    (docs/methods/test_checklist.md §9)."""
    z, zt, y = make(seed=7, dtype=torch.float64)
    for i in range(N):
        zi, zti, yi = z[i : i + 1], zt[i : i + 1], y[i : i + 1]
        tckd, nckd = dkd_parts(zi, zti, yi, tau)
        pt_y = torch.softmax(zti / tau, 1)[0, yi[0]]
        kd_term = kd_kl(zi, zti, yi, alpha=1.0, tau=tau)
        assert (tckd + (1 - pt_y) * nckd).item() == pytest.approx(kd_term.item(), rel=1e-6, abs=1e-6)
        # and dkd with beta = 1 - p^t_y is that identity through the public loss
        assert dkd(zi, zti, yi, 1.0, (1 - pt_y).item(), tau).item() == pytest.approx(kd_term.item(), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("alpha,beta,tau", [(1.0, 8.0, 4.0), (1.0, 2.0, 4.0), (1.0, 0.5, 1.0), (0.3, 6.0, 2.0)])
def test_dkd_matches_numpy_mdistiller(alpha, beta, tau):
    z, zt, y = make(seed=8)
    expected = np_dkd_mdistiller(*np_args(z, zt, y), alpha, beta, tau)
    assert dkd(z.double(), zt.double(), y, alpha, beta, tau).item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert dkd(z, zt, y, alpha, beta, tau).item() == pytest.approx(expected, rel=1e-5)


def test_dkd_is_weighted_sum_of_parts_and_two_classes_have_no_nckd():
    z, zt, y = make(seed=9, dtype=torch.float64)
    tckd, nckd = dkd_parts(z, zt, y, 3.0)
    assert dkd(z, zt, y, 0.7, 5.0, 3.0).item() == pytest.approx((0.7 * tckd + 5.0 * nckd).item(), rel=1e-12)
    z2, zt2, y2 = make(k=2, seed=9, dtype=torch.float64)
    tckd2, nckd2 = dkd_parts(z2, zt2, y2, 3.0)
    assert nckd2.item() == 0.0
    assert tckd2.item() == pytest.approx(kd_kl(z2, zt2, y2, 1.0, 3.0).item(), rel=1e-10)


def test_dkd_finite_where_a_probability_underflows():
    z = torch.tensor([[200.0, -200.0, 0.0]])
    zt = torch.tensor([[-200.0, 200.0, 0.0]])
    y = torch.tensor([0])
    tckd, nckd = dkd_parts(z, zt, y, 1.0)
    assert torch.isfinite(tckd) and torch.isfinite(nckd)


def test_dkd_gradcheck():
    z, zt, y = make(n=4, k=5, seed=10, dtype=torch.float64)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: dkd(s, zt, y, 1.0, 8.0, 2.0), (z,))


# ---- large-tau limit (Kim et al. 2021, Theorem 1) --------------------------------------------------------------------


def test_large_tau_gradient_is_logit_matching():
    """d/dz [tau^2 KL(p^t_tau || p^s_tau)] -> (1/K)[(z - mean z) - (zt - mean zt)] per sample as tau -> inf.

    The tau^2 factor already supplies the scaling: the per-sample gradient is tau (p_tau - p^t_tau), which tends to
    the logit-matching gradient itself (no further factor of tau). Batchmean divides each row by N.
    """
    z, zt, y = make(seed=11, dtype=torch.float64)
    target = ((z - z.mean(1, keepdim=True)) - (zt - zt.mean(1, keepdim=True))) / K
    errors = []
    for tau in (1e2, 1e3, 1e4):
        zz = z.clone().requires_grad_(True)
        kd_kl(zz, zt, y, alpha=1.0, tau=tau).backward()
        errors.append((zz.grad * N - target).abs().max().item())
    scale = target.abs().max().item()
    assert errors[1] < 1e-2 * scale
    assert errors[2] < errors[1] < errors[0]  # converges, roughly as 1/tau
    assert errors[1] / errors[2] > 5


# ---- property tests --------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 8),
    k=st.integers(2, 20),
    tau=st.floats(0.5, 30.0),
    alpha=st.floats(0.0, 1.0),
    scale=st.floats(0.01, 20.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties(n, k, tau, alpha, scale, seed):
    z, zt, y = make(n, k, seed, scale, torch.float64)
    kl_fwd = kd_kl(z, zt, y, 1.0, tau)
    kl_rev = kd_reverse_kl(z, zt, y, 1.0, tau)
    tckd, nckd = dkd_parts(z, zt, y, tau)
    for part in (kl_fwd, kl_rev, tckd, nckd, kd_mse(z, zt, y)):
        assert part.item() >= -1e-12
    for dtype in (torch.float64, torch.float32):
        zd, ztd = z.to(dtype), zt.to(dtype)
        values = [
            kd_kl(zd, ztd, y, alpha, tau),
            kd_mse(zd, ztd, y, alpha),
            kd_reverse_kl(zd, ztd, y, alpha, tau),
            dkd(zd, ztd, y, alpha, 8.0 * alpha, tau),
        ]
        assert all(torch.isfinite(v) for v in values)
    same = z.clone()
    zeros = (kd_kl(z, same, y, 1.0, tau), kd_reverse_kl(z, same, y, 1.0, tau), kd_mse(z, same, y))
    for zero in (*zeros, *dkd_parts(z, same, y, tau)):
        assert abs(zero.item()) < 1e-12


# ---- argument validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [kd_kl, kd_mse, kd_reverse_kl])
@pytest.mark.parametrize("alpha", [-0.1, 1.1, float("nan")])
def test_alpha_outside_unit_interval_raises(loss, alpha):
    z, zt, y = make()
    with pytest.raises(ValueError, match="alpha"):
        loss(z, zt, y, alpha=alpha)


@pytest.mark.parametrize("loss", [kd_kl, kd_reverse_kl, dkd, dkd_parts])
@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau_raises(loss, tau):
    z, zt, y = make()
    with pytest.raises(ValueError, match="tau"):
        loss(z, zt, y, tau=tau)


@pytest.mark.parametrize("loss", [kd_kl, kd_mse, kd_reverse_kl, dkd, dkd_parts])
def test_shape_mismatches_raise(loss):
    z, zt, y = make()
    with pytest.raises(ValueError, match="teacher logits zt"):
        loss(z, zt[:, :-1], y)
    with pytest.raises(ValueError, match="teacher logits zt"):
        loss(z, zt[:-1], y)
    with pytest.raises(ValueError, match="labels y"):
        loss(z, zt, y[:-1])
    with pytest.raises(ValueError, match="student logits z"):
        loss(z[0], zt[0], y)


@pytest.mark.parametrize("kwargs", [{"alpha": -1.0}, {"beta": -0.5}, {"beta": float("nan")}])
def test_dkd_negative_weights_raise(kwargs):
    z, zt, y = make()
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        dkd(z, zt, y, **kwargs)


def test_dkd_single_class_raises():
    z, zt, y = make(k=1)
    with pytest.raises(ValueError, match="classes"):
        dkd_parts(z, zt, y)
