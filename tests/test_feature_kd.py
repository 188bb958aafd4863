"""Representation distillation: every feature loss against an independent NumPy computation in float64 and its
known reductions; feature taps on zoo, timm and torchvision models; connectors train with the student, resume
exactly after kill -9 and stay out of model.safetensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kdlab import models
from kdlab.config import load_recipe
from kdlab.errors import KdlabError
from kdlab.losses import features as F
from kdlab.models.taps import FeatureTaps
from kdlab.train.engine import train
from tests._cli import assert_user_error, kdlab_main, train_killed_and_resumed, write_recipe

rng = np.random.default_rng(0)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def test_hint_is_the_mean_squared_error():
    s, tt = rng.normal(size=(3, 4, 5, 5)), rng.normal(size=(3, 4, 5, 5))
    assert float(F.hint_loss(t(s), t(tt))) == pytest.approx(((s - tt) ** 2).mean(), rel=1e-12)


def _attention(f, p=2):
    a = (np.abs(f) ** p).mean(1).reshape(len(f), -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_attention_transfer_matches_its_closed_form():
    pairs = [(rng.normal(size=(4, 3, 6, 6)), rng.normal(size=(4, 8, 6, 6))),
             (rng.normal(size=(4, 5, 3, 3)), rng.normal(size=(4, 2, 3, 3)))]
    expected = np.mean([((_attention(s) - _attention(tt)) ** 2).mean() for s, tt in pairs])
    got = F.attention_loss([t(s) for s, _ in pairs], [t(tt) for _, tt in pairs])
    assert float(got) == pytest.approx(expected, rel=1e-12)
    s = pairs[0][0]  # one stage, p = 2: identical maps (any channel count, any scale) give 0
    assert float(F.attention_loss([t(s)], [t(np.concatenate([s, s], 1) * 3)])) == pytest.approx(0, abs=1e-20)
    pooled = F.attention_loss([t(rng.normal(size=(2, 3, 8, 8)))], [t(rng.normal(size=(2, 3, 4, 4)))])
    assert pooled.dim() == 0  # spatial sizes that differ are pooled to the smaller


def test_similarity_preserving_matches_numpy():
    s, tt = rng.normal(size=(5, 3, 4, 4)), rng.normal(size=(5, 7, 2, 2))

    def gram(f):
        flat = f.reshape(len(f), -1)
        g = flat @ flat.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    expected = ((gram(s) - gram(tt)) ** 2).sum() / 25
    assert float(F.similarity_loss([t(s)], [t(tt)])) == pytest.approx(expected, rel=1e-12)
    assert float(F.similarity_loss([t(s)], [t(2 * s)])) == pytest.approx(0, abs=1e-20)


def test_pkt_matches_numpy_and_vanishes_for_the_same_geometry():
    s, tt = rng.normal(size=(6, 5)), rng.normal(size=(6, 9))

    def cond(x):
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-7)
        sim = (x @ x.T + 1) / 2
        return sim / sim.sum(1, keepdims=True)

    ps, pt = cond(s), cond(tt)
    expected = (pt * np.log((pt + 1e-7) / (ps + 1e-7))).mean()
    assert float(F.pkt_loss(t(s), t(tt))) == pytest.approx(expected, rel=1e-10)
    q = np.linalg.qr(rng.normal(size=(5, 5)))[0]  # a rotation keeps every cosine
    assert float(F.pkt_loss(t(s @ q), t(s))) == pytest.approx(0, abs=1e-12)


def test_rkd_matches_numpy_and_ignores_scale_and_rotation():
    s, tt = rng.normal(size=(5, 4)), rng.normal(size=(5, 6))

    def huber(a, b):
        d = np.abs(a - b)
        return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()

    def distances(x):
        d = np.linalg.norm(x[None] - x[:, None], axis=-1)
        return d / d[d > 0].mean()

    def angles(x):
        e = x[None] - x[:, None]
        norm = np.linalg.norm(e, axis=-1, keepdims=True)
        e = e / np.maximum(norm, 1e-12)
        return np.einsum("ijd,ikd->ijk", e, e).ravel()

    expected = 25 * huber(distances(s), distances(tt)) + 50 * huber(angles(s), angles(tt))
    assert float(F.rkd_loss(t(s), t(tt))) == pytest.approx(expected, rel=1e-9)
    q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    assert float(F.rkd_loss(t(3 * s @ q), t(s))) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("name, taps", [
    ("resnet20", ["stage1", "stage4", "penultimate", "layer2"]),
    ("wrn_16_2", ["stage2", "penultimate"]),
    ("timm:test_resnet", ["stage1", "stage2", "penultimate", "layer1"]),
    ("torchvision:resnet18", ["layer3", "network.layer4", "penultimate"]),
])
def test_feature_taps_on_zoo_timm_and_torchvision_models(name, taps):
    model = models.create(name, 10, in_channels=3).eval()
    captured = FeatureTaps(model, taps)
    x = torch.randn(2, 3, 32, 32)
    logits, penultimate = model(x, return_features=True)
    features = captured.take()
    assert [f.shape[0] for f in features] == [2] * len(taps)
    torch.testing.assert_close(features[taps.index("penultimate")], penultimate)
    assert all(f.dim() == 4 for n, f in zip(taps, features) if n != "penultimate")
    with pytest.raises(KdlabError, match="no module 'nonexistent' to tap"):
        FeatureTaps(model, ["nonexistent"])


def test_a_stage_beyond_the_model_is_a_clear_error():
    with pytest.raises(KdlabError, match="has stages 1..4, not stage9"):
        FeatureTaps(models.create("resnet20", 10, in_channels=3), ["stage9"])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("feature-teacher") / "run"
    train(load_recipe(raw={"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "resnet20"},
                           "train": {"epochs": 1, "batch_size": 64}, "runtime": {"progress": False, "threads": 1}}),
          out, quiet=True)
    return out


def _recipe(teacher, method: dict, epochs=2):
    return {"data": {"source": "digits", "val_size": 0.1, "crop_padding": 1}, "model": {"name": "resnet8"},
            "method": {"teacher": str(teacher), **method}, "train": {"epochs": epochs, "batch_size": 64},
            "runtime": {"progress": False, "threads": 1, "precision": "fp32"}}


def resumed_method_run(teacher, tmp_path, method: dict) -> tuple[dict, list[dict]]:
    """Train a 3-epoch resnet8 run of ``method`` whole and killed + resumed; assert both end the same and the exported
    model is the bare resnet8; return the whole run's method state (heads, banks) and its epochs' records."""
    recipe = write_recipe(tmp_path, _recipe(teacher, method, epochs=3))
    whole_summary, resumed = train_killed_and_resumed(tmp_path, recipe)
    assert whole_summary["final"] == resumed["final"]
    whole = tmp_path / "whole"
    exported = load_file(str(whole / "checkpoint" / "model.safetensors"))
    assert exported.keys() == models.create("resnet8", 10, in_channels=1).state_dict().keys()
    state = load_file(str(next((whole / "checkpoint").glob("method-*.safetensors"))))
    return state, [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]


def test_fitnet_connectors_train_resume_after_kill_and_stay_out_of_the_model(teacher, tmp_path):
    state, epochs = resumed_method_run(teacher, tmp_path, {"name": "fitnet"})
    assert any(k.startswith("connectors.") for k in state)
    assert {"train_ce", "train_hint"} <= set(epochs[-1])


@pytest.mark.parametrize("method", ["at", "sp", "pkt", "rkd"])
def test_every_feature_method_trains_and_logs_its_term(teacher, tmp_path, method):
    summary = train(load_recipe(raw=_recipe(teacher, {"name": method, "alpha": 0.5}, epochs=1)), tmp_path / "r",
                    quiet=True)
    assert summary["status"] == "completed"
    first = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_ce", "train_kd", f"train_{method}"} <= set(first) and first[f"train_{method}"] > 0


def test_unpaired_or_unknown_taps_are_one_line_errors(teacher, tmp_path):
    bad = _recipe(teacher, {"name": "at", "student_taps": ["stage2"], "teacher_taps": ["stage2", "stage3"]})
    assert_user_error(kdlab_main("train", write_recipe(tmp_path, bad), "--out", tmp_path / "a"), "pair up one to one")
    unknown = _recipe(teacher, {"name": "fitnet", "student_taps": ["block9"], "teacher_taps": ["stage3"]})
    assert_user_error(kdlab_main("train", write_recipe(tmp_path, unknown, "u.yaml"), "--out", tmp_path / "b"),
                      "no module 'block9' to tap")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
