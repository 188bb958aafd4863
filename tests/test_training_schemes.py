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
