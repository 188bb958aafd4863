"""``data.residency``: image folders streamed batch by batch (kdlab.data.files, kdlab.data.stream) give the very
inputs of the decoded split, so a streamed run equals the device run; auto picks by memory; bad files fail in one
line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab.data import load_dataset
from kdlab.data.augment import CropFlip
from kdlab.data.loader import DeviceLoader
from kdlab.data.resized_crop import RandomResizedCrop
from kdlab.data.stored_views import StoredViews
from kdlab.data.stream import StreamLoader
from kdlab.errors import KdlabError
from tests._cli import CIFAR10_CLASSES, ROOT, assert_user_error, kdlab_main, write_recipe

STATS = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}


def _loaders(root, workers: int, augment=None, **kwargs):
    device = load_dataset("folder", root, val_size=20, seed=5)
    streamed = load_dataset("folder", root, val_size=20, seed=5, residency="stream")
    assert streamed.streamed and not device.streamed
    assert streamed.fingerprint == device.fingerprint and streamed.classes == device.classes
    assert np.array_equal(streamed.train.source_index, device.train.source_index)
    augment = augment or CropFlip(3, "reflect", True)
    common = dict(shuffle=True, augment=augment, seed=11, **STATS, **kwargs)
    return (DeviceLoader(device.train, "cpu", 16, **common),
            StreamLoader(streamed.train, "cpu", 16, workers=workers, **common))


STORED = StoredViews(RandomResizedCrop(24, scale=(0.3, 1.0)), count=3, seed=1)


@pytest.mark.parametrize("workers, augment", [(0, None), (2, None), (2, STORED)], ids=["crop-0", "crop-2", "fkd-2"])
def test_streamed_batches_equal_the_device_batches(cifar_subset, private_cache, workers, augment):
    device, streamed = _loaders(cifar_subset, workers, augment)
    assert len(device) == len(streamed)
    for epoch in (0, 1):
        pairs = zip(device.batches(epoch, with_keys=True), streamed.batches(epoch, with_keys=True), strict=True)
        for (x_d, y_d, (s_d, v_d)), (x_s, y_s, (s_s, v_s)) in pairs:
            assert torch.equal(x_d, x_s) and torch.equal(y_d, y_s)
            assert torch.equal(s_d, s_s) and torch.equal(v_d, v_s)  # same samples, same views


def test_fresh_random_resized_crops_stream_like_the_device(cifar_subset, private_cache):
    device, streamed = _loaders(cifar_subset, 2, RandomResizedCrop(24))
    for epoch in (0, 3):
        for (x_d, y_d), (x_s, y_s) in zip(device.batches(epoch), streamed.batches(epoch), strict=True):
            assert x_d.shape[-1] == 24 and torch.equal(x_d, x_s) and torch.equal(y_d, y_s)


def test_a_streamed_split_decodes_the_same_pixels(cifar_subset, private_cache):
    device = load_dataset("folder", cifar_subset)
    streamed = load_dataset("folder", cifar_subset, residency="stream")
    assert streamed.train.images.shape == device.train.images.shape
    picks = np.array([0, 7, 299])
    assert np.array_equal(streamed.train.images[picks].decode(), device.train.images[picks])
    assert np.array_equal(streamed.test.images.decode(), device.test.images)


def test_auto_streams_only_what_does_not_fit(cifar_subset, private_cache):
    decoded = (300 + 60) * 32 * 32 * 3
    assert load_dataset("folder", cifar_subset, residency="auto", memory_budget=decoded - 1).streamed
    assert not load_dataset("folder", cifar_subset, residency="auto", memory_budget=decoded).streamed
    with pytest.raises(KdlabError, match="stream reads image files batch by batch; data source digits"):
        load_dataset("digits", residency="stream")


def test_photos_of_many_sizes_are_fitted_to_one_size(tmp_path, private_cache):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(["a", "b"]):
            (tmp_path / split / name).mkdir(parents=True)
            for i, (h, w) in enumerate([(40, 60), (75, 50), (48, 48)]):
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / split / name / f"{i}.png")
    with pytest.raises(KdlabError, match="all images must have one size"):
        load_dataset("folder", tmp_path)
    device = load_dataset("folder", tmp_path, size=24)
    streamed = load_dataset("folder", tmp_path, size=24, residency="stream")
    assert device.train.images.shape == (6, 24, 24, 3)
    assert np.array_equal(streamed.train.images.decode(), device.train.images)


def _recipe(root, residency: str, **data) -> dict:
    return {"seed": 2, "data": {"source": "folder", "path": str(root), "val_size": 30, "crop_padding": 2,
                                "flip": True, "residency": residency, "stream_workers": 1, **data},
            "model": {"name": "cnn_small8"}, "train": {"epochs": 2, "batch_size": 32},
            "runtime": {"progress": False, "precision": "fp32"}}


@pytest.mark.slow
def test_a_streamed_run_equals_the_device_run_and_resumes_exactly(cifar_subset, tmp_path, private_cache):
    summaries = {}
    for residency in ("device", "stream"):
        out = tmp_path / residency
        result = kdlab_main("train", write_recipe(tmp_path, _recipe(cifar_subset, residency), f"{residency}.yaml"),
                            "--out", out)
        assert result.returncode == 0, result.stderr
        summaries[residency] = json.loads((out / "summary.json").read_text())
    assert summaries["stream"]["data"]["residency"] == "stream"
    assert summaries["device"]["data"]["residency"] == "device"
    for key in ("final", "best", "evaluation"):
        assert summaries["stream"][key] == summaries["device"][key], key
    # killed while writing epoch 2's checkpoint, then resumed from epoch 1: the same as the run in one go
    out = tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_FAULT": "kill@state.json#2"}
    killed = subprocess.run([sys.executable, "-m", "kdlab", "train", str(tmp_path / "stream.yaml"), "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9 and not (out / "summary.json").is_file() or \
        json.loads((out / "summary.json").read_text())["status"] != "completed", killed.stderr
    result = kdlab_main("train", "--resume", out)
    assert result.returncode == 0, result.stderr
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["final"] == summaries["stream"]["final"] and resumed["best"] == summaries["stream"]["best"]


def test_an_image_that_will_not_decode_is_one_line_and_writes_no_run(cifar_subset, tmp_path, private_cache):
    broken = tmp_path / "broken"
    shutil.copytree(cifar_subset, broken)
    victim = sorted((broken / "train" / "cat").iterdir())[3]
    victim.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "run"
    result = kdlab_main("train", write_recipe(tmp_path, _recipe(broken, "stream")), "--out", out)
    assert_user_error(result, str(victim), "not a readable JPEG or PNG image")
    assert not out.exists()


def test_a_bad_file_met_by_a_worker_is_one_line(cifar_subset, tmp_path, private_cache):
    broken = tmp_path / "broken"
    shutil.copytree(cifar_subset, broken)
    victim = sorted((broken / "train" / "dog").iterdir())[0]
    victim.write_bytes(b"GIF89a not an image")
    streamed = load_dataset("folder", broken, residency="stream")
    loader = StreamLoader(streamed.train, "cpu", 64, workers=1, shuffle=True, seed=0, **STATS)
    with pytest.raises(KdlabError, match=f"{victim}: not a readable JPEG or PNG image") as caught:
        for _ in loader.batches(0):
            pass
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_streamed_splits_share_one_pool_of_workers(cifar_subset, private_cache):
    streamed = load_dataset("folder", cifar_subset, val_size=20, seed=5, residency="stream")
    device = load_dataset("folder", cifar_subset, val_size=20, seed=5)
    train = StreamLoader(streamed.train, "cpu", 32, workers=2, **STATS)
    test = StreamLoader(streamed.test, "cpu", 32, workers=2, **STATS)
    assert train._pool is test._pool  # one set of decoding processes for the run
    for loader, split in ((train, device.train), (test, device.test), (train, device.train)):
        expected = DeviceLoader(split, "cpu", 32, **STATS)
        for (x_s, y_s), (x_d, y_d) in zip(loader.batches(0), expected.batches(0), strict=True):
            assert torch.equal(x_s, x_d) and torch.equal(y_s, y_d)
    late = StreamLoader(streamed.val, "cpu", 8, workers=2, **STATS)  # registered after the workers started
    x_s = torch.cat([x for x, _ in late.batches(0)])
    assert torch.equal(x_s, torch.cat([x for x, _ in DeviceLoader(device.val, "cpu", 8, **STATS).batches(0)]))


def test_image_folder_is_the_imagenet_layout_with_val_as_the_test_split(tmp_path, private_cache):
    rng = np.random.default_rng(3)
    for split, count in (("train", 4), ("val", 2)):
        for name in ("n01440764", "n01443537"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(30, 70, 2)
                pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{name}_{i}.JPEG", quality=90)
    device = load_dataset("image_folder", tmp_path, size=32)
    streamed = load_dataset("image_folder", tmp_path, size=32, residency="stream")
    assert device.classes == ["n01440764", "n01443537"] and device.val is None
    assert device.train.images.shape == (8, 32, 32, 3) and device.test.images.shape == (4, 32, 32, 3)
    assert np.array_equal(streamed.test.images.decode(), device.test.images)
    assert np.array_equal(device.test.labels, [0, 0, 1, 1])
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(KdlabError, match=r"missing val/ folder \(expected .*/val/<class>/"):
        load_dataset("image_folder", tmp_path, size=32)
