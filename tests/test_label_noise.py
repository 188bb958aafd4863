"""Seeded label noise: exact rates, the two kinds, determinism, clean labels kept, recorded in the run summary."""

import json

import numpy as np
import pytest

from kdlab.config import load_recipe
from kdlab.data import LabelNoise, load_dataset
from kdlab.data.noise import corrupt_labels
from kdlab.errors import KdlabError


@pytest.mark.parametrize("n,k,rate", [(1000, 10, 0.4), (999, 3, 0.2), (50, 100, 0.5), (10, 2, 0.0), (7, 5, 1.0)])
def test_symmetric_flips_exactly_rate_to_another_class(n, k, rate):
    labels = np.random.default_rng(1).integers(0, k, n)
    noisy = corrupt_labels(labels, k, "symmetric", rate, seed=0)
    assert noisy.dtype == np.int64 and noisy.shape == labels.shape
    assert (noisy != labels).sum() == round(rate * n)  # a flipped label is never the true class
    assert noisy.min() >= 0 and noisy.max() < k


def test_symmetric_is_uniform_over_the_other_classes():
    labels = np.zeros(200_000, dtype=np.int64)
    noisy = corrupt_labels(labels, 5, "symmetric", 0.5, seed=3)
    counts = np.bincount(noisy[noisy != 0], minlength=5)[1:]
    assert counts.sum() == 100_000
    assert np.all(np.abs(counts / 100_000 - 0.25) < 0.01)


def test_pair_flips_to_the_next_class():
    labels = np.arange(1000, dtype=np.int64) % 7
    noisy = corrupt_labels(labels, 7, "pair", 0.3, seed=5)
    wrong = noisy != labels
    assert wrong.sum() == 300
    assert np.array_equal(noisy[wrong], (labels[wrong] + 1) % 7)


def test_noise_is_a_function_of_its_seed_only():
    labels = np.random.default_rng(0).integers(0, 10, 500)
    a = corrupt_labels(labels, 10, "symmetric", 0.4, seed=11)
    assert np.array_equal(a, corrupt_labels(labels, 10, "symmetric", 0.4, seed=11))
    assert not np.array_equal(a, corrupt_labels(labels, 10, "symmetric", 0.4, seed=12))


def test_bad_arguments():
    labels = np.zeros(10, dtype=np.int64)
    with pytest.raises(ValueError, match="kind"):
        corrupt_labels(labels, 10, "asym", 0.1, 0)
    with pytest.raises(ValueError, match="rate"):
        corrupt_labels(labels, 10, "pair", 1.5, 0)


def test_dataset_keeps_clean_labels_and_same_noise_whatever_the_run_seed():
    noise = LabelNoise("symmetric", 0.4, seed=0)
    clean = load_dataset("digits")
    runs = [load_dataset("digits", val_size=0.2, seed=s, label_noise=noise) for s in (1, 2)]
    for d in runs:
        assert d.test.clean_labels is None and np.array_equal(d.test.labels, clean.test.labels)  # test stays clean
        both = np.concatenate([d.train.labels, d.val.labels])
        truth = np.concatenate([d.train.clean_labels, d.val.clean_labels])
        assert abs((both != truth).mean() - 0.4) < 1e-3
        assert d.fingerprint != load_dataset("digits", val_size=0.2, seed=1).fingerprint
    # The same image gets the same noisy label in both runs: index both runs' train+val by image bytes.
    maps = []
    for d in runs:
        images = np.concatenate([d.train.images, d.val.images]).reshape(len(d.train) + len(d.val), -1)
        labels = np.concatenate([d.train.labels, d.val.labels])
        maps.append({img.tobytes(): lab for img, lab in zip(images, labels)})
    shared = set(maps[0]) & set(maps[1])
    assert len(shared) > 1000
    assert all(maps[0][key] == maps[1][key] for key in shared)


def test_clean_val_restores_the_validation_labels():
    d = load_dataset("digits", val_size=0.2, seed=0, label_noise=LabelNoise("pair", 0.3, 0, clean_val=True))
    assert d.val.clean_labels is None
    assert (d.train.labels != d.train.clean_labels).any()


def test_recipe_validation_of_label_noise():
    base = {"data": {"source": "digits"}, "model": {"name": "cnn_small8"}, "train": {"epochs": 1}}
    recipe = load_recipe(raw={**base, "data": {"source": "digits", "label_noise": {"kind": "pair", "rate": 0.2}}})
    assert recipe.data.label_noise.seed == 0 and recipe.data.label_noise.clean_val is False
    for bad, match in [({"kind": "uniform", "rate": 0.2}, "kind"), ({"kind": "pair", "rate": 1.0}, "rate"),
                       ({"kind": "pair", "rate": -0.1}, "rate"), ({"kind": "pair"}, "rate"),
                       ({"kind": "pair", "rate": 0.1, "sed": 1}, "sed")]:
        with pytest.raises(KdlabError, match=match):
            load_recipe(raw={**base, "data": {"source": "digits", "label_noise": bad}})


def test_run_records_label_noise(tmp_path):
    from kdlab.train.engine import train

    recipe = load_recipe(raw={"data": {"source": "digits", "val_size": 0.1,
                                       "label_noise": {"kind": "symmetric", "rate": 0.25, "seed": 4}},
                              "model": {"name": "cnn_small8"}, "train": {"epochs": 1},
                              "runtime": {"progress": False}})
    train(recipe, tmp_path / "run", quiet=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    noise = summary["data"]["label_noise"]
    assert noise["kind"] == "symmetric" and noise["rate"] == 0.25 and noise["seed"] == 4
    total = summary["data"]["train"] + summary["data"]["val"]
    assert noise["train_corrupted"] + noise["val_corrupted"] == round(0.25 * total)
    assert "label_noise" in (tmp_path / "run" / "config.yaml").read_text()
