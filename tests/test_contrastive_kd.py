"""VID and CRD: their losses against NumPy in float64 and their reductions, the CRD memory bank (negatives from
other classes, momentum updates of unit rows, deterministic draws), and both methods end to end: trained, terms
logged, regressors / embeddings / banks resumed exactly after kill -9 and absent from model.safetensors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kdlab.config import load_recipe
from kdlab.losses.contrastive import contrast_scores, nce_loss
from kdlab.losses.features import vid_loss
from kdlab.methods.contrast_memory import ContrastMemory
from kdlab.train.engine import train
from tests._cli import assert_user_error, kdlab_main, write_recipe
from tests.test_feature_kd import _recipe, resumed_method_run, teacher  # noqa: F401  (the teacher fixture)

rng = np.random.default_rng(3)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def softplus(x):
    return np.log1p(np.exp(x))


def test_vid_is_the_gaussian_negative_log_likelihood():
    mean, target = rng.normal(size=(4, 3, 5, 5)), rng.normal(size=(4, 3, 5, 5))
    log_scale = rng.normal(size=3)
    variance = softplus(log_scale)[None, :, None, None] + 1e-5
    expected = np.mean(0.5 * ((mean - target) ** 2 / variance + np.log(variance)))
    assert vid_loss(t(mean), t(target), t(log_scale)).item() == pytest.approx(expected, rel=1e-12)
    vectors = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))
    scale = rng.normal(size=7)
    v = softplus(scale)[None] + 1e-5
    assert vid_loss(t(vectors[0]), t(vectors[1]), t(scale)).item() == pytest.approx(
        np.mean(0.5 * ((vectors[0] - vectors[1]) ** 2 / v + np.log(v))), rel=1e-12)


def test_vid_with_unit_variance_is_half_the_mean_squared_error():
    mean, target = rng.normal(size=(3, 4, 2, 2)), rng.normal(size=(3, 4, 2, 2))
    unit = np.full(4, math.log(math.expm1(1.0)))  # softplus = 1 exactly, eps 0
    assert vid_loss(t(mean), t(target), t(unit), eps=0.0).item() == pytest.approx(
        0.5 * np.mean((mean - target) ** 2), rel=1e-12)


def test_nce_matches_numpy_and_rewards_a_dominant_positive():
    scores = np.exp(rng.normal(size=(5, 9)))
    n, k = 1000, 8
    expected = -(np.log(scores[:, 0] / (scores[:, 0] + k / n + 1e-7)).sum()
                 + np.log((k / n) / (scores[:, 1:] + k / n + 1e-7)).sum()) / 5
    assert nce_loss(t(scores), n).item() == pytest.approx(expected, rel=1e-12)
    good = np.concatenate([np.full((5, 1), 100.0), np.full((5, 8), 1e-6)], 1)
    assert nce_loss(t(good), n).item() < nce_loss(t(scores), n).item()
    assert nce_loss(t(good), n).item() == pytest.approx(0.0, abs=2e-3)


def test_contrast_scores_are_exponentiated_inner_products_over_t():
    anchors, rows = rng.normal(size=(3, 4)), rng.normal(size=(3, 6, 4))
    expected = np.exp(np.einsum("bkd,bd->bk", rows, anchors) / 0.07)
    np.testing.assert_allclose(contrast_scores(t(anchors), t(rows), 0.07).numpy(), expected, rtol=1e-12)


def _memory(n=60, classes=3, negatives=7, momentum=0.5, seed=0):
    torch.manual_seed(seed)
    labels = np.arange(n) % classes
    source = np.arange(n) * 2 + 5  # source indices need not be 0..n-1
    return ContrastMemory(source, labels, dim=4, negatives=negatives, momentum=momentum), source, labels


def test_negatives_come_from_other_classes_and_the_positive_is_the_sample():
    memory, source, labels = _memory()
    keys = torch.from_numpy(source[[0, 1, 2, 30, 59]])
    rows = memory.rows(keys)
    assert rows.shape == (5, 8)
    assert rows[:, 0].tolist() == [0, 1, 2, 30, 59]
    for r in rows:
        assert all(labels[int(j)] != labels[int(r[0])] for j in r[1:])
    again, _, _ = _memory()
    assert torch.equal(again.rows(keys), rows)  # same seed and step: the same draws
    drawn = []
    for _ in range(400):
        memory.steps += 1
        drawn.append(memory.rows(keys)[:, 1:].flatten())
    counts = np.bincount(torch.cat(drawn).numpy(), minlength=60)
    assert counts.min() > 0  # every sample is some anchor's negative
    # anchors of classes 0, 1, 2, 0, 2: a class-1 sample is a negative for 4 anchors, classes 0 and 2 for 3 and 2
    per_class = np.array([counts[labels == c].mean() for c in range(3)])
    np.testing.assert_allclose(per_class / per_class.sum(), np.array([3, 4, 3]) / 10, atol=0.02)


def test_memory_rows_move_by_momentum_and_stay_unit():
    memory, source, _ = _memory(momentum=0.5)
    before = memory.student[[3, 4]].clone()
    v = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    memory.update(torch.tensor([3, 4]), v, v)
    expected = torch.nn.functional.normalize(0.5 * before + 0.5 * v, dim=1)
    torch.testing.assert_close(memory.student[[3, 4]], expected)
    assert torch.allclose(memory.teacher[[3, 4]].norm(dim=1), torch.ones(2))
    zero, _, _ = _memory(momentum=0.0)
    zero.update(torch.tensor([1]), v[:1], v[:1])
    torch.testing.assert_close(zero.student[1], v[0])
    assert int(memory.steps) == 1


def test_normaliser_is_fixed_by_the_first_batch():
    memory, _, _ = _memory()
    first = torch.full((2, 8), 3.0)
    out = memory.normalise(0, first)
    assert float(memory.normalisers[0]) == pytest.approx(3.0 * 60)
    torch.testing.assert_close(out, first / 180.0)
    memory.normalise(0, torch.full((2, 8), 10.0))
    assert float(memory.normalisers[0]) == pytest.approx(180.0)


def test_too_many_negatives_is_a_clear_error(teacher, tmp_path):
    bad = _recipe(teacher, {"name": "crd"})  # 16384 negatives on a split of ~1600 digits
    assert_user_error(kdlab_main("train", write_recipe(tmp_path, bad), "--out", tmp_path / "r"),
                      "negatives 16384 must be fewer than")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("method", [{"name": "vid"}, {"name": "crd", "negatives": 64, "alpha": 1.0}])
def test_vid_and_crd_resume_exactly_and_keep_their_heads_out_of_the_model(teacher, tmp_path, method):
    state, epochs = resumed_method_run(teacher, tmp_path, method)
    expected = {"vid": ("regressors.",), "crd": ("embed_student.", "embed_teacher.", "memory.student")}[method["name"]]
    assert all(any(k.startswith(prefix) for k in state) for prefix in expected)
    assert epochs[0][f"train_{method['name']}"] != 0 and "train_ce" in epochs[0]


def test_crd_trains_under_a_continuous_augmentation(teacher, tmp_path):
    """RandomResizedCrop has no discrete views: the batches still carry their sample keys (view -1) for the bank."""
    recipe = _recipe(teacher, {"name": "crd", "negatives": 32}, epochs=1)
    recipe["data"] = {"source": "digits", "val_size": 0.1, "random_resized_crop": {"size": 8}}
    summary = train(load_recipe(raw=recipe), tmp_path / "r", quiet=True)
    assert summary["status"] == "completed"
    first = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train_crd"] > 0
