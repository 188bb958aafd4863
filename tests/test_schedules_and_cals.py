"""Weight and temperature schedules (kd_annealed), CTKD's adversarial curriculum temperature, and CALS's augmented
Lagrangian: formulas against NumPy / autograd in float64, their reductions (a flat schedule is KD; inactive
constraints are a constant), the per-epoch updates, one-line errors, and kill -9 resumes of the stateful ones."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kdlab import losses
from kdlab.config import load_recipe
from kdlab.data import load_dataset
from kdlab.losses.lagrangian import cals_penalty, margin_constraints, phr_penalty, updated_multipliers
from kdlab.methods import MethodContext, get
from kdlab.methods.ctkd import GlobalTemperature, curriculum_strength, reverse_gradient
from kdlab.methods.kd_annealed import anneal
from kdlab.train.engine import train
from tests._cli import assert_user_error, kdlab_main, train_killed_and_resumed, write_recipe

rng = np.random.default_rng(11)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("schedule-teacher") / "run"
    train(load_recipe(raw={"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"},
                           "train": {"epochs": 1}, "runtime": {"progress": False, "threads": 1}}), out, quiet=True)
    return out


def _raw(method, epochs=2, val=True):
    return {"data": {"source": "digits", "val_size": 0.1 if val else 0, "crop_padding": 1},
            "model": {"name": "cnn_small8"}, "method": method, "train": {"epochs": epochs},
            "runtime": {"progress": False, "threads": 1, "precision": "fp32"}}


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ schedules

def test_anneal_shapes_reach_their_ends():
    assert anneal(4, 1, 0, 5) == 4 and anneal(4, 1, 4, 5) == 1
    assert [anneal(0, 1, e, 5, "linear") for e in range(5)] == [0, 0.25, 0.5, 0.75, 1]
    assert anneal(4, 1, 2, 5, "cosine") == pytest.approx(2.5)  # half way: the mean
    assert anneal(4, 1, 1, 5, "cosine") == pytest.approx(1 + 3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert [anneal(4, 1, e, 4, "step") for e in range(4)] == [4, 4, 1, 1]
    assert anneal(4, 1, 0, 1) == 4  # a one-epoch run uses the start


def test_a_flat_schedule_is_kd_exactly_and_a_moving_one_logs_its_values(teacher, tmp_path):
    kd = train(load_recipe(raw=_raw({"name": "kd", "teacher": str(teacher), "alpha": 0.7, "tau": 3.0})),
               tmp_path / "kd", quiet=True)
    flat = train(load_recipe(raw=_raw({"name": "kd_annealed", "teacher": str(teacher), "alpha_start": 0.7,
                                       "alpha_end": 0.7, "tau_start": 3.0, "tau_end": 3.0})), tmp_path / "flat",
                 quiet=True)
    assert flat["final"] == kd["final"]
    train(load_recipe(raw=_raw({"name": "kd_annealed", "teacher": str(teacher), "alpha_start": 0.9, "alpha_end": 0.5,
                                "tau_start": 8.0, "tau_end": 2.0, "shape": "linear"}, epochs=3)), tmp_path / "moving",
          quiet=True)
    logged = [(e["method_alpha"], e["method_tau"]) for e in _metrics(tmp_path / "moving")]
    assert logged == [pytest.approx((0.9, 8.0)), pytest.approx((0.7, 5.0)), pytest.approx((0.5, 2.0))]


# ------------------------------------------------------------------------------------------------ CTKD

def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.tensor([1.5, -2.0], dtype=torch.float64, requires_grad=True)
    (reverse_gradient(x, 0.3) ** 2).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * 2 * x.detach())


def test_curriculum_strength_rises_on_a_half_cosine():
    assert curriculum_strength(0, 10) == pytest.approx(0.5 * (1 - math.cos(math.pi / 10)))
    assert curriculum_strength(4, 10) == pytest.approx(0.5)
    assert curriculum_strength(9, 10) == pytest.approx(1.0) and curriculum_strength(50, 10) == pytest.approx(1.0)
    assert curriculum_strength(0, 0, 0.7) == 0.7


def test_the_temperature_ascends_the_distillation_loss_that_the_student_descends():
    zs, zt = t(rng.normal(size=(6, 5))), t(3 * rng.normal(size=(6, 5)))
    temperature = GlobalTemperature(1.0, 20.0, 1.0).double()
    assert float(temperature(1.0).detach()) == pytest.approx(1 + 20 / (1 + math.exp(-1)))  # tau ~ 15.6 at the start
    loss = losses.kl_to_logits(zt, zs, temperature(0.4))
    loss.backward()

    def kd_at(theta):  # the same loss as a function of theta, differentiated by central differences
        return float(losses.kl_to_logits(zt, zs, 1.0 + 20.0 / (1 + math.exp(-theta))))

    h = 1e-6
    slope = (kd_at(1.0 + h) - kd_at(1.0 - h)) / (2 * h)
    assert float(temperature.theta.grad) == pytest.approx(-0.4 * slope, rel=1e-6)


def test_ctkd_trains_logs_its_temperature_and_resumes_exactly(teacher, tmp_path):
    recipe = write_recipe(tmp_path, _raw({"name": "ctkd", "teacher": str(teacher), "ramp_epochs": 2}, epochs=3))
    whole, resumed = train_killed_and_resumed(tmp_path, recipe)
    assert whole["final"] == resumed["final"]
    epochs = _metrics(tmp_path / "whole")
    assert [e["method_lambda"] for e in epochs] == [pytest.approx(0.5), pytest.approx(1.0), pytest.approx(1.0)]
    taus = [e["method_tau"] for e in epochs]
    assert all(1 < tau < 21 for tau in taus) and len(set(taus)) == 3  # learned: it moves every epoch
    assert [e["method_tau"] for e in _metrics(tmp_path / "killed")] == taus


# ------------------------------------------------------------------------------------------------ CALS

def _phr(h, lam, rho):
    x = lam + rho * h
    return np.where(x >= 0, (x ** 2 - lam ** 2) / (2 * rho), -lam ** 2 / (2 * rho)), np.maximum(x, 0)


def test_cals_penalty_and_multipliers_match_numpy():
    z, lam, rho, m = 10 * rng.normal(size=(7, 4)), rng.uniform(0, 2, size=4), 1.7, 5.0
    h = (z.max(1, keepdims=True) - z - m) / m
    np.testing.assert_allclose(margin_constraints(t(z), m).numpy(), h, rtol=1e-12)
    np.testing.assert_allclose(margin_constraints(t(z), m, normalise=False).numpy(), h * m, rtol=1e-12)
    value, grad = _phr(h, lam, rho)
    got_value, got_grad = phr_penalty(t(h), t(lam), rho)
    np.testing.assert_allclose(got_value.numpy(), value, rtol=1e-12)
    np.testing.assert_allclose(got_grad.numpy(), grad, rtol=1e-12)
    assert float(cals_penalty(t(z), t(lam), rho, m)) == pytest.approx(value.sum(1).mean(), rel=1e-12)
    expected = np.clip(np.clip(grad, 1e-6, 1e6).mean(0), 1e-6, 1e6)
    np.testing.assert_allclose(updated_multipliers(t(z), t(lam), rho, m).numpy(), expected, rtol=1e-12)
    # the PHR gradient is the derivative of the penalty in h
    hh = t(h).requires_grad_(True)
    phr_penalty(hh, t(lam), rho)[0].sum().backward()
    np.testing.assert_allclose(hh.grad.numpy(), grad, rtol=1e-10)


def test_cals_reductions():
    z, lam = 0.1 * rng.normal(size=(5, 3)), np.array([0.2, 0.5, 0.8])  # lambda + rho h < 0 for h ~ -1
    # margins far below m: every constraint inactive, a constant with no gradient in the logits
    zz = t(z).requires_grad_(True)
    term = cals_penalty(zz, t(lam), 1.0, margin=20.0)
    assert float(term.detach()) == pytest.approx(-(lam ** 2).sum() / 2, rel=1e-12)
    term.backward()
    assert float(zz.grad.abs().max()) == 0.0
    # lambda 0, rho 1: half the squared hinge of the constraints
    wide = 30 * rng.normal(size=(5, 3))
    h = (wide.max(1, keepdims=True) - wide - 10.0) / 10.0
    assert float(cals_penalty(t(wide), t(np.zeros(3)), 1.0, 10.0)) == pytest.approx(
        (0.5 * np.maximum(h, 0) ** 2).sum(1).mean(), rel=1e-12)


def _cals(**params):
    dataset = load_dataset("digits")
    from kdlab import models

    cls = get("cals")
    model = models.create("cnn_small8", 10, in_channels=1)
    return cls(model, cls.Params(**params), MethodContext(dataset, has_validation=True))


def test_cals_moves_lambda_every_epoch_and_rho_on_its_step():
    method = _cals(rho_step=2, margin=2.0)
    assert torch.all(method.lambd == 1e-6) and float(method.rho) == 1.0
    wide = torch.tensor([[30.0, 0.0] + [0.0] * 8] * 4)  # margins of 30 > m: active constraints, penalty > 0
    method.end_epoch(0, lambda: (wide, torch.zeros(4, dtype=torch.long)))
    first = method.lambd.clone()
    expected = updated_multipliers(wide, torch.full((10,), 1e-6), 1.0, 2.0)
    torch.testing.assert_close(first, expected)
    assert float(method.rho) == 1.0  # epoch 1 is not a rho step
    method.end_epoch(1, lambda: (wide, torch.zeros(4, dtype=torch.long)))  # penalty grew with lambda: rho x 1.2
    assert float(method.rho) == pytest.approx(1.2)
    calm = torch.zeros(4, 10)  # no margins: penalty <= 0, rho stays
    method.end_epoch(3, lambda: (calm, torch.zeros(4, dtype=torch.long)))
    assert float(method.rho) == pytest.approx(1.2)
    assert method.epoch_log()["rho"] == pytest.approx(1.2)


def test_cals_without_a_validation_split_is_refused_before_it_starts(tmp_path):
    assert_user_error(kdlab_main("train", write_recipe(tmp_path, _raw({"name": "cals"}, val=False)), "--out",
                                 tmp_path / "r"), "method cals", "data.val_size")
    assert not (tmp_path / "r").exists()


def test_cals_resumes_its_multipliers_exactly(tmp_path):
    recipe = write_recipe(tmp_path, _raw({"name": "cals", "margin": 2.0, "rho_step": 1}, epochs=3))
    whole, resumed = train_killed_and_resumed(tmp_path, recipe)
    assert whole["final"] == resumed["final"]
    logged = [(e["method_lambda_mean"], e["method_rho"]) for e in _metrics(tmp_path / "whole")]
    assert logged == [(e["method_lambda_mean"], e["method_rho"]) for e in _metrics(tmp_path / "killed")]
    assert logged[0][0] > 1e-6 and {"train_ce", "train_penalty"} <= set(_metrics(tmp_path / "whole")[0])
