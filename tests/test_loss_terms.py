"""Every method logs its task term and its soft-target term separately, weights applied, and their sum is its loss.

The split terms are checked in float64 against independent NumPy computations of each weighted term (written from
docs/methods/, not from the implementation), their sum against the functional loss, and every registered method
(teachers handed in as in-memory networks through ``MethodContext.load_teacher``) against the rule that its terms
include the hard-label ``ce`` term and nothing but finite scalars.
"""

import numpy as np
import pytest
import torch

from kdlab import losses, methods, models
from kdlab.data import load_dataset
from kdlab.methods import MethodContext
from kdlab.methods.with_features import WithFeatures
from kdlab.teacher import Teacher

N, K = 16, 7


def _batch(seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, K, generator=g, dtype=torch.float64) * scale, torch.randint(0, K, (N,), generator=g)


def np_log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def np_kl(t, log_q):
    return (t * (np.log(t) - log_q)).sum(axis=1).mean()


def np_corrected(y, beta):
    t = np.full((len(y), K), (1 - beta) / (K - 1))
    t[np.arange(len(y)), y] = beta
    return t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_smoothing_terms(seed):
    z, y = _batch(seed)
    zn, yn = z.numpy(), y.numpy()
    for split, s in (("uniform", np.full((N, K), 1 / K)), ("others", (1 - np.eye(K)[yn]) / (K - 1))):
        terms = losses.label_smoothing_terms(z, y, 0.2, split)
        assert list(terms) == ["ce", "smoothing"]
        assert terms["ce"].item() == pytest.approx(0.8 * np_ce(zn, yn), rel=1e-12)
        # (the smoothed target is built in float32, as label_smoothing builds it)
        assert terms["smoothing"].item() == pytest.approx(-0.2 * (s * np_log_softmax(zn)).sum(1).mean(), rel=1e-6)
        total = losses.label_smoothing(z, y, 0.2, split)
        assert (terms["ce"] + terms["smoothing"]).item() == pytest.approx(total.item(), rel=1e-14)
        # The gradient is the loss's own, whole (the ce part carries none of its own).
        zg = z.clone().requires_grad_(True)
        sum(losses.label_smoothing_terms(zg, y, 0.2, split).values()).backward()
        zr = z.clone().requires_grad_(True)
        losses.label_smoothing(zr, y, 0.2, split).backward()
        assert torch.equal(zg.grad, zr.grad)


@pytest.mark.parametrize("beta, tau, tau_squared", [(None, 4.0, True), (0.5, 2.0, True), (0.5, 3.0, False)])
def test_lsr_os_tc_terms(beta, tau, tau_squared):
    z, y = _batch(3)
    zn, yn = z.numpy(), y.numpy()
    eps = 0.3
    terms = losses.lsr_os_tc_terms(z, y, eps, tau, beta, tau_squared)
    t = np.full((N, K), 1 / K) if beta is None else np_corrected(yn, beta)
    assert terms["ce"].item() == pytest.approx((1 - eps) * np_ce(zn, yn), rel=1e-12)
    expected_os = eps * (tau**2 if tau_squared else 1.0) * np_kl(t, np_log_softmax(zn / tau))
    assert terms["os"].item() == pytest.approx(expected_os, rel=1e-10)
    assert torch.equal(terms["ce"] + terms["os"], losses.lsr_os_tc(z, y, eps, tau, beta, tau_squared))
    if beta is None:
        assert torch.equal(sum(losses.lsr_os_terms(z, y, eps, tau).values()), losses.lsr_os(z, y, eps, tau))


def test_tfkd_reg_terms_in_both_modes():
    z, y = _batch(4)
    zn, yn = z.numpy(), y.numpy()
    alpha, tau, a = 0.3, 5.0, 0.9
    paper = losses.tfkd_reg_terms(z, y, alpha, tau, a, "paper")
    assert paper["ce"].item() == pytest.approx((1 - alpha) * np_ce(zn, yn), rel=1e-12)
    pd = np_corrected(yn, a)
    teacher = np.exp(np_log_softmax(np.log(pd) / tau))
    assert paper["kd"].item() == pytest.approx(alpha * tau**2 * np_kl(teacher, np_log_softmax(zn / tau)), rel=1e-10)
    reference = losses.tfkd_reg_terms(z, y, alpha, tau, a, "reference", multiplier=10.0)
    soft = np.exp(np_log_softmax(pd / tau))
    assert reference["kd"].item() == pytest.approx(alpha * 10.0 * np_kl(soft, np_log_softmax(zn)) / K, rel=1e-10)
    for mode in ("paper", "reference"):
        terms = losses.tfkd_reg_terms(z, y, alpha, tau, a, mode, 10.0)
        assert torch.equal(terms["ce"] + terms["kd"], losses.tfkd_reg(z, y, alpha, tau, a, mode, 10.0))


def test_mbls_and_zipf_terms():
    z, y = _batch(5, scale=8.0)
    zn, yn = z.numpy(), y.numpy()
    terms = losses.mbls_terms(z, y, margin=4.0, lam=0.2)
    hinge = np.maximum(zn.max(axis=1, keepdims=True) - zn - 4.0, 0).mean()
    assert terms["ce"].item() == pytest.approx(np_ce(zn, yn), rel=1e-12)
    assert terms["margin"].item() == pytest.approx(0.2 * hinge, rel=1e-12)
    assert torch.equal(terms["ce"] + terms["margin"], losses.mbls(z, y, 4.0, 0.2))
    ranks = torch.argsort(torch.argsort(-z, dim=1), dim=1) + 1
    zipf = losses.zipf_ls_terms(z, y, ranks, lam=0.3)
    assert zipf["ce"].item() == pytest.approx(np_ce(zn, yn), rel=1e-12)
    assert torch.equal(zipf["ce"] + zipf["zipf"], losses.zipf_ls(z, y, ranks, lam=0.3))


@pytest.mark.parametrize("kind", ["kl", "reverse_kl", "mse"])
def test_kd_terms_mix_once(kind):
    z, y = _batch(6)
    zt, _ = _batch(7)
    zn, ztn, yn = z.numpy(), zt.numpy(), y.numpy()
    alpha, tau = 0.7, 3.0
    terms = losses.kd_terms(z, zt, y, alpha, tau, kind)
    assert terms["ce"].item() == pytest.approx((1 - alpha) * np_ce(zn, yn), rel=1e-12)
    ps, pt = np.exp(np_log_softmax(zn / tau)), np.exp(np_log_softmax(ztn / tau))
    expected = {"kl": tau**2 * np_kl(pt, np.log(ps)), "reverse_kl": tau**2 * np_kl(ps, np.log(pt)),
                "mse": ((zn - ztn) ** 2).mean()}[kind]
    assert terms["kd"].item() == pytest.approx(alpha * expected, rel=1e-10)
    functional = {"kl": losses.kd_kl(z, zt, y, alpha, tau), "reverse_kl": losses.kd_reverse_kl(z, zt, y, alpha, tau),
                  "mse": losses.kd_mse(z, zt, y, alpha)}[kind]
    assert torch.equal(terms["ce"] + terms["kd"], functional)


# ------------------------------------------------------------------------------------------------ every method


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _in_memory_teacher(calls: list, model_name: str = "cnn_small8"):
    def load_teacher(run_dir, checkpoint="final"):
        calls.append((run_dir, checkpoint))
        torch.manual_seed(1)
        return Teacher(models.create(model_name, 10, in_channels=1))

    return load_teacher


@pytest.mark.parametrize("name", methods.names())
def test_every_method_logs_a_task_term_and_finite_weighted_terms(digits, name):
    cls = methods.get(name)
    params = {"teacher": "/nowhere/teacher"} if cls.needs_teacher else {}
    if "teachers" in cls.Params.model_fields:  # an ensemble of teachers (multi_kd)
        params = {"teachers": ["/nowhere/teacher"]}
    if "negatives" in cls.Params.model_fields:  # a memory bank smaller than the digits' training split (crd)
        params["negatives"] = 32
    staged = cls.has_heads or issubclass(cls, WithFeatures)  # online branches and feature taps need named stages
    model_name = "resnet8" if staged else "cnn_small8"
    calls: list = []
    context = MethodContext(digits, model_name=model_name, load_teacher=_in_memory_teacher(calls, model_name),
                            epochs=4)  # schedules over the run (kd_annealed) need its length
    torch.manual_seed(0)
    method = cls(models.create(model_name, 10, in_channels=1), cls.Params.model_validate(params), context)
    assert calls == ([("/nowhere/teacher", "final")] if cls.needs_teacher else [])
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    keys = (torch.from_numpy(digits.train.source_index[:8]), torch.zeros(8, dtype=torch.int64))
    logits, terms = method(x, y, 0, keys if cls.needs_sample_keys else None)
    assert logits.shape == (8, 10)
    assert "ce" in terms and len(terms) >= 1
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    assert not any(k.startswith("teacher") for k in method.state_dict())


def test_a_distilling_method_without_a_teacher_loader_is_a_clear_error(digits):
    from kdlab.errors import KdlabError

    cls = methods.get("kd")
    with pytest.raises(KdlabError, match="needs a teacher"):
        cls(models.create("cnn_small8", 10, in_channels=1), cls.Params(teacher="/t"), MethodContext(digits))
