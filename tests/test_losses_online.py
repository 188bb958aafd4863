"""Online distillation losses against NumPy, their reductions, and the detach switch."""

import math

import numpy as np
import pytest
import torch

from kdlab.losses import online


def softmax(z, tau=1.0):
    e = np.exp(z / tau - (z / tau).max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_kl(target_logits, logits, tau):
    p, q = softmax(target_logits, tau), softmax(logits, tau)
    return tau**2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), 1))


def np_ce(z, y):
    return -np.mean(np.log(softmax(z)[np.arange(len(y)), y]))


@pytest.fixture
def peers():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(6, 5)) * 2 for _ in range(4)]
    y = rng.integers(0, 5, 6)
    return logits, y


def t(a):
    return torch.tensor(a, dtype=torch.float64)


def test_sigmoid_rampup():
    assert online.sigmoid_rampup(0) == pytest.approx(math.exp(-5))
    assert online.sigmoid_rampup(40) == pytest.approx(math.exp(-5 * 0.25))
    assert online.sigmoid_rampup(80) == online.sigmoid_rampup(500) == 1.0
    assert online.sigmoid_rampup(3, length=0) == 1.0


def test_dml_matches_numpy(peers):
    logits, y = peers
    m = len(logits)
    expected_kd = sum(np_kl(logits[j], logits[i], 3.0) for i in range(m) for j in range(m) if j != i) / (m - 1)
    terms = online.dml_terms([t(z) for z in logits], torch.tensor(y), tau=3.0, weight=0.5)
    assert terms["ce"].item() == pytest.approx(sum(np_ce(z, y) for z in logits), abs=1e-10)
    assert terms["kd"].item() == pytest.approx(0.5 * expected_kd, abs=1e-10)


def test_cl_ilr_matches_numpy_and_equals_dml_for_two_peers(peers):
    logits, y = peers
    m = len(logits)
    expected = sum(np_kl((sum(logits) - z) / (m - 1), z, 2.0) for z in logits)
    assert online.cl_ilr_terms([t(z) for z in logits], torch.tensor(y), tau=2.0)["kd"].item() == \
        pytest.approx(expected, abs=1e-10)
    two = [t(z) for z in logits[:2]]
    assert online.cl_ilr(two, torch.tensor(y), tau=2.0).item() == pytest.approx(online.dml(two, torch.tensor(y), tau=2.0).item(), abs=1e-12)


def test_one_matches_numpy(peers):
    logits, y = peers
    rng = np.random.default_rng(1)
    gate = softmax(rng.normal(size=(6, 4)))
    ensemble = sum(gate[:, i : i + 1] * z for i, z in enumerate(logits))
    terms = online.one_terms([t(z) for z in logits], t(gate), torch.tensor(y), tau=3.0)
    assert terms["ce"].item() == pytest.approx(sum(np_ce(z, y) for z in logits) + np_ce(ensemble, y), abs=1e-10)
    assert terms["kd"].item() == pytest.approx(sum(np_kl(ensemble, z, 3.0) for z in logits), abs=1e-10)


def test_okddip_matches_numpy(peers):
    logits, y = peers
    peer_logits, leader = logits[:3], logits[3]
    rng = np.random.default_rng(2)
    features = rng.normal(size=(3, 6, 8))
    wq, wk = rng.normal(size=(2, 8)), rng.normal(size=(2, 8))
    scores = np.einsum("and,bnd->nab", features @ wq.T, features @ wk.T)
    alpha = np.exp(scores - scores.max(2, keepdims=True))
    alpha /= alpha.sum(2, keepdims=True)
    attention = online.peer_attention(t(features), t(wq), t(wk))
    np.testing.assert_allclose(attention.numpy(), alpha, atol=1e-12)
    terms = online.okddip_terms([t(z) for z in peer_logits], t(leader), attention, torch.tensor(y), tau=3.0, weight=2.0)
    targets = [sum(alpha[:, a, b : b + 1] * peer_logits[b] for b in range(3)) for a in range(3)]
    assert terms["kd_peers"].item() == pytest.approx(2.0 * sum(np_kl(targets[a], peer_logits[a], 3.0) for a in range(3)), abs=1e-10)
    assert terms["kd_leader"].item() == pytest.approx(2.0 * np_kl(sum(peer_logits) / 3, leader, 3.0), abs=1e-10)
    assert terms["ce"].item() == pytest.approx(sum(np_ce(z, y) for z in logits), abs=1e-10)


def test_okddip_with_self_attention_only_has_no_peer_term(peers):
    logits, y = peers
    eye = torch.eye(3, dtype=torch.float64).expand(6, 3, 3)
    terms = online.okddip_terms([t(z) for z in logits[:3]], t(logits[3]), eye, torch.tensor(y))
    assert terms["kd_peers"].item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("detach", [False, True])
def test_detach_targets_controls_gradient_into_the_targets(peers, detach):
    logits, y = peers
    z = [t(a).requires_grad_() for a in logits[:2]]
    online.dml_terms(z, torch.tensor(y), detach_targets=detach)["kd"].backward()
    grads = [p.grad.clone() for p in z]
    # Reference: every target a constant. Without detaching, gradient also flows through the targets, so it differs.
    for p in z:
        p.grad = None
    target_only = online.dml_terms(z, torch.tensor(y), detach_targets=True)["kd"]
    target_only.backward()
    same = all(torch.allclose(a, p.grad) for a, p in zip(grads, z))
    assert same == detach


def test_shape_errors():
    with pytest.raises(ValueError, match="at least 2"):
        online.dml([torch.zeros(2, 3)], torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="same N x K"):
        online.dml([torch.zeros(2, 3), torch.zeros(2, 4)], torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="gate"):
        online.one([torch.zeros(2, 3)] * 3, torch.ones(2, 2) / 2, torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("tau,sharpness", [(1.0, 1.0), (3.0, 0.5)])
def test_bdkd_matches_numpy(peers, tau, sharpness):
    (zs, zt, *_), y = peers
    ps, pt = softmax(zs, tau), softmax(zt, tau)
    hs, ht = -(ps * np.log(ps)).sum(1), -(pt * np.log(pt)).sum(1)
    w = 1 / (1 + np.exp(-sharpness * (hs - ht)))
    fkl = (pt * (np.log(pt) - np.log(ps))).sum(1)
    rkl = (ps * (np.log(ps) - np.log(pt))).sum(1)
    terms = online.bdkd_terms(t(zs), t(zt), torch.tensor(y), tau=tau, weight=0.7, sharpness=sharpness)
    assert terms["ce"].item() == pytest.approx(np_ce(zs, y) + np_ce(zt, y), rel=1e-6)
    assert terms["kd_student"].item() == pytest.approx(0.7 * tau**2 * np.mean((1 - w) * fkl + w * rkl), rel=1e-6)
    assert terms["kd_teacher"].item() == pytest.approx(0.7 * tau**2 * np.mean(fkl), rel=1e-6)


def test_bdkd_reductions_and_detach(peers):
    (zs, zt, *_), y = peers
    same = online.bdkd_terms(t(zs), t(zs), torch.tensor(y), tau=2.0)
    assert same["kd_student"].item() == pytest.approx(0.0, abs=1e-12)
    assert same["kd_teacher"].item() == pytest.approx(0.0, abs=1e-12)
    # A very sharp weight picks forward KL where the student is more confident, reverse where it is less.
    sharp = online.bdkd_terms(t(zs), t(zt), torch.tensor(y), sharpness=1e6)
    ps, pt = softmax(zs), softmax(zt)
    hs, ht = -(ps * np.log(ps)).sum(1), -(pt * np.log(pt)).sum(1)
    fkl = (pt * (np.log(pt) - np.log(ps))).sum(1)
    rkl = (ps * (np.log(ps) - np.log(pt))).sum(1)
    assert sharp["kd_student"].item() == pytest.approx(np.mean(np.where(hs > ht, rkl, fkl)), rel=1e-6)
    for detach in (True, False):
        s, te = t(zs).requires_grad_(), t(zt).requires_grad_()
        terms = online.bdkd_terms(s, te, torch.tensor(y), detach_targets=detach)
        gs, gt = torch.autograd.grad(terms["kd_student"], (s, te), allow_unused=True, retain_graph=True)
        assert gs is not None and gs.abs().sum() > 0
        assert (gt is None or gt.abs().sum() == 0) == detach
        gs, gt = torch.autograd.grad(terms["kd_teacher"], (s, te), allow_unused=True)
        assert gt is not None and gt.abs().sum() > 0
        assert (gs is None or gs.abs().sum() == 0) == detach
