"""Training schemes around KD: several teachers (kdlab.losses.ensemble, method multi_kd), checked in float64
against NumPy and against their reduction to ordinary KD."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdlab import losses
from kdlab.config import load_recipe
from kdlab.losses.ensemble import COMBINATIONS, ensemble_kd
from kdlab.train.engine import train
from tests._cli import train_killed_and_resumed, write_recipe

rng = np.random.default_rng(1)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _kl_batchmean(p, z, tau):
    log_q = np.log(_softmax(z / tau))
    return tau**2 * (p * (np.log(p) - log_q)).sum(1).mean()


@pytest.mark.parametrize("combine", COMBINATIONS)
def test_one_teacher_is_ordinary_kd(combine):
    z, zt, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)) * 2, rng.integers(0, 5, 6)
    got = ensemble_kd(t(z), [t(zt)], torch.from_numpy(y), tau=3.0, combine=combine)
    assert float(got) == pytest.approx(float(losses.divergence(t(z), t(zt), "kl", 3.0)), rel=1e-12)


def test_each_combination_matches_numpy():
    z, y, tau = rng.normal(size=(7, 4)), rng.integers(0, 4, 7), 2.0
    teachers = [rng.normal(size=(7, 4)) * s for s in (1.0, 2.0, 0.5)]
    mean_logits = _softmax(np.mean(teachers, 0) / tau)
    mean_probs = np.mean([_softmax(zt / tau) for zt in teachers], 0)
    ce = np.stack([-np.log(_softmax(zt))[np.arange(7), y] for zt in teachers])  # M x N
    w = _softmax(-ce, axis=0)
    confidence = (w[:, :, None] * np.stack([_softmax(zt / tau) for zt in teachers])).sum(0)
    for combine, target in (("logits", mean_logits), ("probs", mean_probs), ("confidence", confidence)):
        got = ensemble_kd(t(z), [t(zt) for zt in teachers], torch.from_numpy(y), tau, combine)
        assert float(got) == pytest.approx(_kl_batchmean(target, z, tau), rel=1e-10), combine


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    runs = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"teacher{seed}") / "run"
        train(load_recipe(raw={"seed": seed, "data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"},
                               "train": {"epochs": 1}, "runtime": {"progress": False, "threads": 1}}), out, quiet=True)
        runs.append(out)
    return runs


def _recipe(method, tmp_path):
    return load_recipe(raw={"data": {"source": "digits", "val_size": 0.1, "crop_padding": 1, "cache_dir": str(tmp_path)},
                            "model": {"name": "cnn_small8"}, "method": method, "train": {"epochs": 1},
                            "runtime": {"progress": False, "threads": 1, "precision": "fp32"}})


def test_multi_teacher_with_one_teacher_trains_like_kd(teachers, tmp_path):
    kd = train(_recipe({"name": "kd", "teacher": str(teachers[0])}, tmp_path), tmp_path / "kd", quiet=True)
    for combine in ("logits", "confidence"):
        multi = train(_recipe({"name": "multi_kd", "teachers": [str(teachers[0])], "combine": combine}, tmp_path),
                      tmp_path / combine, quiet=True)
        # the same loss (to float32 rounding: KD computes KL from log-probabilities, the ensemble from probabilities)
        assert multi["final"] == pytest.approx(kd["final"], rel=1e-5), combine


def test_multi_teacher_trains_from_two_teachers(teachers, tmp_path):
    summary = train(_recipe({"name": "multi_kd", "teachers": [str(t) for t in teachers], "combine": "probs"},
                            tmp_path), tmp_path / "two", quiet=True)
    assert summary["status"] == "completed"
    assert set(summary["frozen_networks"]) == {"teacher", "teacher2"}
    first = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_ce", "train_kd"} <= set(first)


# ------------------------------------------------------------------------------------------------ mixup / CutMix

from kdlab.losses.mixing import apply_mix, draw_mix, mixed_cross_entropy  # noqa: E402


def test_mixup_mixes_inputs_and_targets_as_written():
    x, y = t(rng.normal(size=(6, 2, 4, 4))), torch.tensor([0, 1, 2, 0, 1, 2])
    mix = draw_mix(6, 4, 4, np.random.default_rng(3), "mixup", 0.4, 1.0)
    expected = np.random.default_rng(3)
    expected.random()
    lam, perm = expected.beta(0.4, 0.4), expected.permutation(6)
    assert mix.lam == pytest.approx(lam) and mix.permutation.tolist() == perm.tolist()
    torch.testing.assert_close(apply_mix(x, mix), lam * x + (1 - lam) * x[perm])
    z = t(rng.normal(size=(6, 3)))
    logp = np.log(_softmax(z.numpy()))
    ce = lambda labels: -logp[np.arange(6), labels].mean()  # noqa: E731
    assert float(mixed_cross_entropy(z, y, mix)) == pytest.approx(lam * ce(y.numpy()) + (1 - lam) * ce(y.numpy()[perm]))


def test_cutmix_pastes_a_box_and_lambda_is_the_kept_area():
    x = t(rng.normal(size=(4, 1, 10, 12)))
    for seed in range(20):
        mix = draw_mix(4, 10, 12, np.random.default_rng(seed), "cutmix", 1.0, 1.0)
        if mix.box is None:
            continue
        top, bottom, left, right = mix.box
        mixed = apply_mix(x, mix)
        inside = torch.zeros(10, 12, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(mixed[:, :, inside], x[mix.permutation][:, :, inside])
        assert torch.equal(mixed[:, :, ~inside], x[:, :, ~inside])
        assert mix.lam == pytest.approx(1 - inside.sum().item() / 120)


def test_rate_zero_never_mixes():
    assert all(draw_mix(5, 4, 4, np.random.default_rng(s), "mixup", 1.0, 0.0).lam == 1.0 for s in range(10))


def test_mixup_kd_at_rate_zero_is_kd_exactly_and_mixing_changes_it(teachers, tmp_path):
    kd = train(_recipe({"name": "kd", "teacher": str(teachers[0])}, tmp_path), tmp_path / "kd", quiet=True)
    zero = train(_recipe({"name": "mixup_kd", "teacher": str(teachers[0]), "rate": 0.0}, tmp_path), tmp_path / "z",
                 quiet=True)
    assert zero["final"] == kd["final"]
    for kind in ("mixup", "cutmix"):
        mixed = train(_recipe({"name": "mixup_kd", "teacher": str(teachers[0]), "kind": kind}, tmp_path),
                      tmp_path / kind, quiet=True)
        again = train(_recipe({"name": "mixup_kd", "teacher": str(teachers[0]), "kind": kind}, tmp_path),
                      tmp_path / f"{kind}2", quiet=True)
        assert mixed["final"] != kd["final"] and mixed["final"] == again["final"]  # mixed, and reproducibly


def test_a_killed_mixup_run_resumes_to_the_same_result(teachers, tmp_path):
    raw = _recipe({"name": "mixup_kd", "teacher": str(teachers[0]), "kind": "cutmix"}, tmp_path).to_dict()
    raw["train"]["epochs"] = 3
    whole, resumed = train_killed_and_resumed(tmp_path, write_recipe(tmp_path, raw))
    assert whole["final"] == resumed["final"]


# ------------------------------------------------------------------------------------------------ mean teacher


def _mean_teacher(decay):
    from kdlab import methods, models
    from kdlab.data import load_dataset
    from kdlab.methods import MethodContext

    cls = methods.get("mean_teacher")
    torch.manual_seed(0)
    return cls(models.create("cnn_small8", 10, in_channels=1), cls.Params(decay=decay),
               MethodContext(load_dataset("digits")))


def test_mean_teacher_averages_the_weights_as_written():
    method = _mean_teacher(0.9).train()
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.5)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    expected = [p.detach().clone() for p in method.model.parameters()]  # step 1: the student itself
    for step in range(3):
        current = [p.detach().clone() for p in method.model.parameters()]
        if step:
            expected = [0.9 * e + 0.1 * c for e, c in zip(expected, current)]
        _, terms = method(x, y, 0)
        for e, a in zip(expected, method.ema.parameters()):
            torch.testing.assert_close(a, e)
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    assert not any(p.requires_grad for p in method.ema.parameters())
    assert bool(method.started) and "started" in method.state_dict()


def test_mean_teacher_with_decay_zero_is_the_previous_step_student():
    method = _mean_teacher(0.0).train()
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.5)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    for _ in range(2):
        before = {k: v.clone() for k, v in method.model.state_dict().items()}
        with torch.no_grad():
            method.model.eval()
            expected = method.model(x)  # a Tf-KD-self teacher with the latest weights gives these logits
            method.model.train()
        _, terms = method(x, y, 0)  # (the student's train-mode pass then moves its own BatchNorm statistics)
        assert all(torch.equal(v, before[k]) for k, v in method.ema.state_dict().items())
        torch.testing.assert_close(method.ema(x), expected, rtol=0, atol=0)
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()


def test_ramp_up_is_the_sigmoid_schedule():
    from kdlab.methods.mean_teacher import ramp_up

    assert ramp_up(0, 10) == pytest.approx(np.exp(-5)) and ramp_up(5, 10) == pytest.approx(np.exp(-5 * 0.25))
    assert ramp_up(10, 10) == ramp_up(99, 10) == ramp_up(0, 0) == 1.0


def test_a_killed_mean_teacher_run_resumes_exactly_and_exports_the_student_alone(tmp_path):
    from safetensors.torch import load_file

    raw = {"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"},
           "method": {"name": "mean_teacher", "decay": 0.99, "ramp_epochs": 2}, "train": {"epochs": 3},
           "runtime": {"progress": False, "threads": 1, "precision": "fp32"}}
    whole, resumed = train_killed_and_resumed(tmp_path, write_recipe(tmp_path, raw))
    assert whole["final"] == resumed["final"]
    exported = load_file(str(tmp_path / "whole" / "checkpoint" / "model.safetensors"))
    assert not any(k.startswith("ema") for k in exported)
    terms = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_ce", "train_consistency"} <= set(terms)
