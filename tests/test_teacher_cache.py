"""Teacher-logit cache: exact, keyed, shared on disk across runs and seeds, refused for non-discrete augmentations."""

import json
from dataclasses import dataclass

import pytest
import torch

from kdlab.config import load_recipe
from kdlab.data.augment import CropFlip
from kdlab.errors import KdlabError
from kdlab.train.teachers import TeacherFactory
from kdlab.train.engine import prepare, train


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    train(load_recipe(raw={"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"},
                           "train": {"epochs": 2}, "runtime": {"progress": False, "threads": 1}}), out, quiet=True)
    return out


def kd_recipe(teacher, cache_dir, mode="memory", seed=0, precision="fp32", epochs=2):
    return load_recipe(raw={
        "seed": seed,
        "data": {"source": "digits", "val_size": 0.1, "crop_padding": 1, "flip": True, "cache_dir": str(cache_dir)},
        "model": {"name": "cnn_small8"}, "method": {"name": "kd", "teacher": str(teacher)},
        "train": {"epochs": epochs, "batch_size": 64},
        "runtime": {"teacher_cache": mode, "precision": precision, "threads": 1, "progress": False},
    })


def test_view_index_round_trip():
    for augment in (CropFlip(2, "zero", True), CropFlip(3, "reflect", False), CropFlip(0, "zero", True)):
        index = torch.arange(augment.num_views)
        views = augment.views_of(index)
        assert torch.equal(augment.view_index(views), index)
        assert int(views.dy.max()) == int(views.dx.max()) == 2 * augment.padding


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_logits_equal_on_the_fly_logits(teacher, tmp_path, precision):
    prepared = prepare(kd_recipe(teacher, tmp_path, precision=precision))
    method = prepared.method
    assert method.teacher.cache is not None and method.teacher.cache.folder is None
    for epoch in range(3):
        for inputs, labels, keys in prepared.train_loader.batches(epoch, with_keys=True):
            with prepared.runtime.autocast():
                cached = method.teacher(inputs, keys)
                with torch.inference_mode():
                    direct = method.teacher(inputs)
            assert cached.dtype == direct.dtype
            assert torch.equal(cached, direct)  # bit for bit
    assert method.teacher.cache.hits > 0 and method.teacher.cache.misses > 0


def test_fill_computes_every_view_exactly(teacher, tmp_path):
    prepared = prepare(kd_recipe(teacher, tmp_path))
    cache, loader = prepared.method.teacher.cache, prepared.train_loader
    with torch.inference_mode():
        cache.fill(prepared.method.teacher, loader)
    assert cache.coverage == pytest.approx(len(loader.labels) / cache.table.shape[0])  # every view of every train image
    # Spot-check views against an independent forward of the augmented images.
    augment = loader.augment
    for v in (0, 7, augment.num_views - 1):
        index = torch.arange(0, 50)
        views = augment.views_of(torch.full_like(index, v))
        with torch.inference_mode():
            direct = prepared.method.teacher(loader.normalise(augment.apply(loader.images[index], views)))
        assert torch.equal(cache.table[loader.source_index[index], v], direct)
    assert cache.misses == len(loader.labels) * augment.num_views


def test_runs_with_and_without_the_cache_are_identical(teacher, tmp_path):
    with_cache = train(kd_recipe(teacher, tmp_path / "c1", mode="memory"), tmp_path / "a", quiet=True)
    without = train(kd_recipe(teacher, tmp_path / "c2", mode="off"), tmp_path / "b", quiet=True)
    assert with_cache["final"] == without["final"]
    assert with_cache["teacher_cache"]["mode"] == "memory" and without["teacher_cache"] is None
    assert with_cache["teacher_cache"]["hits"] > 0


def test_disk_cache_is_shared_across_runs_and_seeds(teacher, tmp_path):
    first = train(kd_recipe(teacher, tmp_path, mode="disk", seed=0), tmp_path / "s0", quiet=True)
    folder = tmp_path / "teacher-logits" / first["teacher_cache"]["key"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["filled"] == first["teacher_cache"]["misses"]
    # Same seed again: every view it draws was stored by the first run.
    again = train(kd_recipe(teacher, tmp_path, mode="disk", seed=0), tmp_path / "s0b", quiet=True)
    assert again["teacher_cache"]["misses"] == 0 and again["final"] == first["final"]
    # Another seed carves another validation split, yet shares the cache (samples are addressed by source index).
    other = train(kd_recipe(teacher, tmp_path, mode="disk", seed=1), tmp_path / "s1", quiet=True)
    assert other["teacher_cache"]["key"] == first["teacher_cache"]["key"]
    assert other["teacher_cache"]["hits"] > 0
    assert json.loads((folder / "meta.json").read_text())["filled"] == meta["filled"] + other["teacher_cache"]["misses"]


def test_key_changes_with_what_the_logits_depend_on(teacher, tmp_path):
    base = prepare(kd_recipe(teacher, tmp_path)).method.teacher.cache.key
    assert prepare(kd_recipe(teacher, tmp_path, precision="bf16")).method.teacher.cache.key != base
    raw = kd_recipe(teacher, tmp_path).to_dict()
    raw["data"]["crop_padding"] = 2
    assert prepare(load_recipe(raw=raw)).method.teacher.cache.key != base
    assert prepare(kd_recipe(teacher, tmp_path, seed=3)).method.teacher.cache.key == base


@dataclass(frozen=True)
class Rotation:
    """A stand-in for a continuous augmentation (no finite set of views)."""

    is_identity = False
    discrete = False
    num_views = None

    def sample(self, n, generator, **_):
        return torch.rand(n, generator=generator) * 360.0  # an angle per sample

    def apply(self, images, angles):
        return images  # the stand-in never rotates: only its keys matter here


def test_non_discrete_augmentation_is_refused(teacher, tmp_path):
    prepared = prepare(kd_recipe(teacher, tmp_path))
    loader = prepared.train_loader
    loader.augment = Rotation()
    assert not loader.discrete_views
    _, _, (samples, views) = next(loader.batches(0, with_keys=True))  # sample keys still, but no view keys
    assert (views == -1).all() and samples.shape == views.shape
    with pytest.raises(KdlabError, match="needs a discrete augmentation"):
        TeacherFactory(prepared.recipe, prepared.runtime, prepared.dataset, loader)(teacher)
    auto = kd_recipe(teacher, tmp_path, mode="auto")
    assert TeacherFactory(auto, prepared.runtime, prepared.dataset, loader)(teacher).cache is None  # runs the teacher


def test_cache_teacher_command_fills_the_disk_cache(teacher, tmp_path, capsys):
    from kdlab.cli import main

    path = tmp_path / "kd.yaml"
    path.write_text(kd_recipe(teacher, tmp_path / "cache", mode="auto").model_dump_json())  # JSON is YAML
    assert main(["cache-teacher", str(path), "--quiet"]) == 0
    assert "teacher cache" in capsys.readouterr().out
    run = train(kd_recipe(teacher, tmp_path / "cache", mode="auto"), tmp_path / "run", quiet=True)
    assert run["teacher_cache"]["misses"] == 0 and run["teacher_cache"]["mode"] == "disk"
    ce = tmp_path / "ce.yaml"
    ce.write_text('{"data": {"source": "digits"}, "model": {"name": "cnn_small8"}, "train": {"epochs": 1}}')
    assert main(["cache-teacher", str(ce)]) == 2
    assert "has no teacher" in capsys.readouterr().err
