"""Audio end to end: every kind of method trains on sound unchanged (CE, LS, LSR-OS-TC, KD from an audio teacher,
online distillation), segmented clips report clip-level accuracy, teachers and evaluation check the features,
image settings on audio (and audio settings on images) are user errors, and a resumed audio run repeats exactly."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from kdlab.cli import main
from kdlab.config import load_recipe
from kdlab.errors import KdlabError
from kdlab.train.engine import prepare, train

RATE = 4000
TONES = {"low": 250.0, "mid": 600.0, "high": 1300.0}  # one class per pitch


pytestmark = pytest.mark.usefixtures("private_cache")


def write_tones(root: Path, per_class: dict[str, int], seconds: float, seed: int, layout: str = "split") -> Path:
    """Noisy tones with random phase, amplitude and onset, as 16-bit WAVs: ``train/<class>/`` and ``test/<class>/``
    (layout "split") or GTZAN-style ``genres/<class>/<class>.000NN.wav`` (layout "genres", per_class["all"])."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    splits = {"genres": per_class["all"]} if layout == "genres" else per_class
    for split, count in splits.items():
        for name, freq in TONES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                onset = rng.uniform(0, seconds / 4)
                tone = rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * freq * (t - onset) + rng.uniform(0, 6.3))
                wave = np.where(t >= onset, tone, 0.0) + 0.05 * rng.standard_normal(len(t))
                sf.write(folder / f"{name}.{k:05d}.wav", wave.astype(np.float32), RATE, subtype="PCM_16")
    return root / "genres" if layout == "genres" else root


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    return write_tones(tmp_path_factory.mktemp("tones"), {"train": 24, "test": 8}, 0.5, seed=0)


def recipe(tones_dir: Path, **sections) -> dict:
    raw = {
        "data": {"source": "audio_folder", "path": str(tones_dir),
                 "options": {"sample_rate": RATE, "clip_seconds": 0.5}, "val_size": 9,
                 "features": {"n_fft": 128, "hop_length": 32, "n_mels": 24},
                 "audio_augment": {"time_shift": 0.1, "gain_db": 4.0, "freq_masks": 1, "freq_mask_width": 3,
                                   "time_masks": 1, "time_mask_width": 6}},
        "model": {"name": "audio_cnn_small"},
        "method": {"name": "ce"},
        "train": {"epochs": 4, "batch_size": 16},
        "optim": {"lr": 0.05, "nesterov": True},
        "schedule": {"name": "cosine"},
        "runtime": {"progress": False},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.fixture(scope="module")
def ce_run(tones, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ce"
    summary = train(load_recipe(raw=recipe(tones)), out, quiet=True)
    return out, summary


def test_audio_cnn_learns_the_tones_and_records_its_features(ce_run):
    run, summary = ce_run
    assert summary["status"] == "completed"
    assert summary["final"]["test_acc"] >= 0.9
    features = summary["data"]["features"]
    assert features["sample_rate"] == RATE and features["n_mels"] == 24 and features["hop_length"] == 32
    assert summary["data"]["input_shape"] == [RATE // 2]
    config = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert len(config["mean"]) == len(config["std"]) == 1  # one log-mel channel
    assert config["features"]["f_max"] == RATE / 2  # defaults that depend on the data are spelled out
    # the run's config.yaml repeats it: the same recipe again gives the same predictions
    again = train(load_recipe(run / "config.yaml"), run.parent / "again", quiet=True)
    assert again["final"] == summary["final"]


@pytest.mark.parametrize("method", [{"name": "ls", "eps": 0.1}, {"name": "lsr_os_tc", "eps": 0.1, "tau": 4.0,
                                                                    "beta": 0.5}])
def test_teacher_free_methods_train_on_audio(tones, tmp_path, method):
    summary = train(load_recipe(raw=recipe(tones, method=method, train={"epochs": 2})), tmp_path / "r", quiet=True)
    assert summary["status"] == "completed" and summary["method"] == method["name"]
    assert summary["final"]["test_acc"] > 1 / 3


def test_kd_from_an_audio_teacher_and_its_cache(tones, ce_run, tmp_path):
    teacher, _ = ce_run
    kd = {"name": "kd", "teacher": str(teacher), "alpha": 0.9, "tau": 4.0}
    summary = train(load_recipe(raw=recipe(tones, method=kd, train={"epochs": 2})), tmp_path / "kd", quiet=True)
    assert summary["status"] == "completed"
    assert summary["teacher_cache"] is None  # random audio augmentation: no finite set of views to cache
    fidelity = summary["evaluation"]["fidelity"]["test"]
    assert 0 <= fidelity["agreement"] <= 1
    # without augmentation every input is the sample itself (one view): the teacher's logits are cached
    raw = recipe(tones, method=kd, train={"epochs": 2}, runtime={"teacher_cache": "memory"})
    raw["data"].pop("audio_augment")
    cached = train(load_recipe(raw=raw), tmp_path / "kd-cached", quiet=True)
    assert cached["teacher_cache"]["hits"] > 0 and cached["teacher_cache"]["misses"] == 63  # 63 training samples x 1 view


def test_a_teacher_with_other_features_is_refused(tones, ce_run, tmp_path):
    teacher, _ = ce_run
    raw = recipe(tones, method={"name": "kd", "teacher": str(teacher)})
    raw["data"]["features"] = {"n_fft": 128, "hop_length": 32, "n_mels": 20}
    with pytest.raises(KdlabError, match="n_mels 24 vs 20"):
        prepare(load_recipe(raw=raw))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("method", [{"name": "okddip", "branches": 3, "rampup": 1}, {"name": "dml", "branches": 2}])
def test_online_distillation_on_audio(tones, tmp_path, method):
    summary = train(load_recipe(raw=recipe(tones, method=method, train={"epochs": 2})), tmp_path / "r", quiet=True)
    assert summary["status"] == "completed"
    assert "ensemble" in summary["heads"] and summary["heads"]["ensemble"]["test"]["acc"] > 1 / 3
    if method["name"] == "okddip":
        assert summary["inference_head"] == "leader"


def test_segmented_clips_report_clip_accuracy(tmp_path):
    genres = write_tones(tmp_path / "gtzan", {"all": 10}, 1.0, seed=1, layout="genres")
    raw = recipe(genres, train={"epochs": 3})
    raw["data"]["options"] = {"sample_rate": RATE, "clip_seconds": 1.0, "segment_seconds": 0.5, "test_fraction": 0.3}
    raw["data"]["val_size"] = 0.15
    run = tmp_path / "run"
    summary = train(load_recipe(raw=raw), run, quiet=True)
    test = summary["evaluation"]["test"]
    assert test["clips"] == 9 and "clip_acc" in test and 0 <= test["clip_nll"]
    assert summary["data"]["test"] == 18 and summary["data"]["groups"]["test"] == 9  # two segments per clip
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"test_clip_acc", "val_clip_acc"} <= set(lines[-1])
    assert summary["final"]["test_clip_acc"] == lines[-1]["test_clip_acc"]
    with np.load(run / "predictions" / "test.npz") as npz:
        groups, logits, labels = npz["groups"], npz["logits"], npz["labels"]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    clip_correct = [probabilities[groups == g].mean(0).argmax() == labels[groups == g][0] for g in np.unique(groups)]
    assert np.mean(clip_correct) == pytest.approx(test["clip_acc"])


def test_eval_recomputes_an_audio_run(ce_run, tmp_path):
    run, summary = ce_run
    assert main(["eval", str(run), "--out", str(tmp_path / "eval")]) == 0
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert record["test"]["acc"] == pytest.approx(summary["evaluation"]["test"]["acc"])


def test_image_settings_on_audio_and_audio_settings_on_images_are_user_errors(tones, capsys, tmp_path):
    with pytest.raises(KdlabError, match="data.crop_padding: .* is audio"):
        prepare(load_recipe(raw=recipe(tones, data={"crop_padding": 2})))
    with pytest.raises(KdlabError, match="data.random_resized_crop: .* is audio"):
        prepare(load_recipe(raw=recipe(tones, data={"random_resized_crop": {"size": 16}})))
    with pytest.raises(KdlabError, match="data.features: digits is images"):
        prepare(load_recipe(raw={"data": {"source": "digits", "features": {"n_mels": 8}}, "model": {"name": "cnn_small8"},
                                 "train": {"epochs": 1}}))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(tones, data={"flip": True})))
    assert main(["train", str(path), "--out", str(tmp_path / "never"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.flip" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "never").exists()


def test_resumed_audio_run_with_augmentation_repeats_exactly(tones, tmp_path, monkeypatch):
    """Interrupt an augmented audio run inside its second epoch, resume it: the same result as an uninterrupted run
    (augmentation is drawn per epoch from the seed, so the resumed epochs see the same shifts, gains and masks)."""
    from kdlab.train import engine

    raw = recipe(tones, train={"epochs": 3})
    whole = train(load_recipe(raw=raw), tmp_path / "whole", quiet=True)
    real_epoch = engine.train_epoch

    def interrupted(prepared, optimizer, epoch, **kwargs):
        if epoch == 1:
            real_epoch(prepared, optimizer, epoch, max_steps=1, **kwargs)  # a step of epoch 2, then the "kill"
            raise KeyboardInterrupt
        return real_epoch(prepared, optimizer, epoch, **kwargs)

    monkeypatch.setattr(engine, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(load_recipe(raw=raw), tmp_path / "cut", quiet=True)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(engine, "train_epoch", real_epoch)
    assert main(["train", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    resumed = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert resumed["final"] == whole["final"]
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / "predictions" / "test.npz")["logits"],
                                  np.load(tmp_path / "whole" / "predictions" / "test.npz")["logits"])


@pytest.mark.slow
def test_the_gtzan_recipe_runs_on_a_folder_in_gtzan_layout(tmp_path):
    """recipes/gtzan.yaml unchanged but for data.path, the epoch count, a larger test fraction and no validation split
    (too few clips here to stratify the recipe's), on 30-second 22,050 Hz AU clips in genres/<genre>/<genre>.000NN.au: ten 3-second segments per
    clip, clip-level accuracy reported."""
    genres = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    rng = np.random.default_rng(0)
    t = np.arange(30 * 22050) / 22050
    for k, genre in enumerate(genres):
        (tmp_path / "genres" / genre).mkdir(parents=True)
        for clip in range(3):
            wave = 0.3 * np.sin(2 * np.pi * (110 * (k + 1)) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(tmp_path / "genres" / genre / f"{genre}.{clip:05d}.au", wave.astype(np.float32), 22050,
                     subtype="PCM_16")
    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    assert main(["train", str(root / "recipes" / "gtzan.yaml"), f"data.path={tmp_path / 'genres'}", "train.epochs=1",
                 "data.val_size=0", "data.options.test_fraction=0.34", "train.eval_batch_size=64", "--out", str(run), "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["classes"] == 10 and summary["data"]["input_shape"] == [3 * 22050]
    assert summary["data"]["groups"] == {"train": 20, "test": 10}  # a third of 30 clips, stratified: one per genre
    assert summary["data"]["test"] == 100 and summary["evaluation"]["test"]["clips"] == 10
    assert "test_clip_acc" in summary["final"]
