"""Splits of int16 waveforms with groups: validation, take, the decoded-data cache, group-aware validation carving."""

import numpy as np
import pytest

from kdlab.data import cache
from kdlab.data.dataset import Dataset, Split
from kdlab.data.split import carve_validation


def audio_split(clips_per_class=6, segments=3, classes=3, length=50, seed=0):
    rng = np.random.default_rng(seed)
    n = clips_per_class * classes * segments
    waves = rng.integers(-32768, 32767, size=(n, length), dtype=np.int16)
    labels = np.repeat(np.arange(classes * clips_per_class) % classes, segments).astype(np.int64)
    groups = np.repeat(np.arange(classes * clips_per_class), segments).astype(np.int64)
    return Split(waves, labels, groups=groups)


def test_split_accepts_int16_waveforms_and_checks_groups():
    split = audio_split()
    assert split.is_audio and len(split) == 54
    with pytest.raises(ValueError, match="int16"):
        Split(np.zeros((3, 10), dtype=np.float32), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="groups"):
        Split(np.zeros((3, 10), dtype=np.int16), np.zeros(3, dtype=np.int64), groups=np.zeros(2, dtype=np.int64))
    taken = split.take(np.array([4, 5, 6]))
    assert taken.groups.tolist() == [1, 1, 2] and taken.source_index.tolist() == [4, 5, 6]


def test_dataset_needs_a_sample_rate_for_waveforms():
    split = audio_split()
    with pytest.raises(ValueError, match="sample_rate"):
        Dataset("a", ["x", "y", "z"], split, split, None, "")
    image = Split(np.zeros((2, 4, 4, 1), dtype=np.uint8), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="shapes"):
        Dataset("a", ["x", "y", "z"], split, image, None, "", sample_rate=8000)


def test_cache_round_trip_keeps_waveforms_groups_and_rate(tmp_path):
    split = audio_split()
    test = Split(split.images[:9].copy(), split.labels[:9].copy())
    dataset = Dataset("a", ["x", "y", "z"], split, test, None, "k", sample_rate=8000)
    cache.store_entry(tmp_path, "audio", "k", dataset)
    back = cache.load_entry(tmp_path, "audio", "k")
    assert back.sample_rate == 8000 and back.train.images.dtype == np.int16
    np.testing.assert_array_equal(back.train.images, split.images)
    np.testing.assert_array_equal(back.train.groups, split.groups)
    assert back.test.groups is None


def test_validation_split_takes_whole_groups_stratified():
    split = audio_split(clips_per_class=10)
    dataset = Dataset("a", ["x", "y", "z"], split, split, None, "k", sample_rate=8000)
    carved = carve_validation(dataset, 0.2, seed=3)
    val_groups, train_groups = set(carved.val.groups.tolist()), set(carved.train.groups.tolist())
    assert not val_groups & train_groups
    assert len(val_groups) == 6  # 20% of 30 clips
    assert np.bincount(carved.val.labels // 1, minlength=3).tolist() == [6, 6, 6]  # 2 clips x 3 segments per class
    again = carve_validation(dataset, 0.2, seed=3)
    np.testing.assert_array_equal(again.val.source_index, carved.val.source_index)
    other = carve_validation(dataset, 0.2, seed=4)
    assert set(other.val.groups.tolist()) != val_groups
