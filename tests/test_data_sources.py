"""Data sources, the decoded-data cache and validation splits.

Formats kdlab has no real copy of here (CIFAR-10/100 pickles, small IDX files, image folders with val/) are
written by the tests in exactly the official layout; Fashion-MNIST and the CIFAR-10 JPEG folder are read for real
from /work/shared/data.
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdlab.data import Dataset, Split, carve_validation, load_dataset
from kdlab.data import cache as data_cache
from kdlab.data.sources.idx import FASHION_MNIST_CLASSES
from kdlab.errors import KdlabError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def data_cache_dir(tmp_path, monkeypatch) -> Path:
    """Each test gets its own empty decoded-data cache, and no progress bars."""
    path = tmp_path / "kdlab-cache"
    monkeypatch.setenv("KDLAB_CACHE_DIR", str(path))
    monkeypatch.setenv("KDLAB_NO_PROGRESS", "1")
    return path


def cache_entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if not p.name.startswith(".")) if cache_dir.exists() else []


# ---------------------------------------------------------------------------------------------------- digits


def test_digits_shapes_classes_and_fixed_stratified_split():
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.classes == [str(d) for d in range(10)] and ds.val is None
    assert ds.train.images.shape == (1438, 8, 8, 1) and ds.test.images.shape == (359, 8, 8, 1)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int64
    assert ds.train.images.max() == 255 and ds.train.images.min() == 0
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(np.unique(ds.train.images).tolist()) <= allowed and 128 in allowed
    train_counts, test_counts = np.bincount(ds.train.labels), np.bincount(ds.test.labels)
    assert np.all(np.abs(test_counts / (train_counts + test_counts) - 0.2) < 0.02)
    again = load_dataset("digits")  # from the cache, same split
    np.testing.assert_array_equal(again.test.labels, ds.test.labels)
    assert again.fingerprint == ds.fingerprint and len(ds.fingerprint) == 64


# ------------------------------------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist_folder(folder: Path, gz: bool, n_train: int = 30, n_test: int = 12, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % classes).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, gz)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_reads_written_files(tmp_path, gz):
    arrays = write_mnist_folder(tmp_path / "mnist", gz)
    ds = load_dataset("idx", tmp_path / "mnist")
    assert ds.classes == [str(d) for d in range(10)] and ds.name == "mnist"
    for split, key in ((ds.train, "train"), (ds.test, "t10k")):
        assert split.images.shape == (len(arrays[key][0]), 28, 28, 1)
        np.testing.assert_array_equal(split.images[..., 0], arrays[key][0])
        np.testing.assert_array_equal(split.labels, arrays[key][1].astype(np.int64))


def test_idx_class_names_from_folder_name_or_option(tmp_path):
    write_mnist_folder(tmp_path / "My-Fashion-copy", gz=True)
    assert load_dataset("idx", tmp_path / "My-Fashion-copy").classes == FASHION_MNIST_CLASSES
    names = [f"c{i}" for i in range(10)]
    assert load_dataset("idx", tmp_path / "My-Fashion-copy", classes=names).classes == names


def test_idx_real_fashion_mnist(shared_data):
    fashion_mnist = shared_data("fashion-mnist")
    ds = load_dataset("idx", fashion_mnist)
    assert ds.classes == FASHION_MNIST_CLASSES == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                                   "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert ds.train.images.shape == (60000, 28, 28, 1) and ds.test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.train.labels).tolist() == [6000] * 10
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10


def test_idx_bad_magic_names_the_file(tmp_path):
    write_mnist_folder(tmp_path / "m", gz=False)
    bad = tmp_path / "m" / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x08\x03\x00\x00" + bad.read_bytes()[4:])
    with pytest.raises(KdlabError, match=f"{bad}: not an IDX file"):
        load_dataset("idx", tmp_path / "m")


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_truncated_file_names_the_file(tmp_path, data_cache_dir, gz):
    write_mnist_folder(tmp_path / "m", gz=gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / "m" / name
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(KdlabError, match=f"{path}: (truncated|corrupt)"):
        load_dataset("idx", tmp_path / "m")
    assert cache_entries(data_cache_dir) == []


def test_idx_label_out_of_range_names_the_file_and_value(tmp_path):
    write_mnist_folder(tmp_path / "m", gz=True)
    labels = np.zeros(30, dtype=np.uint8)
    labels[7] = 10
    path = write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", labels, gz=True)
    with pytest.raises(KdlabError, match=f"{path}: label 10 .*out of range for 10 classes"):
        load_dataset("idx", tmp_path / "m")
    # with eleven names the same file is fine
    assert load_dataset("idx", tmp_path / "m", classes=[str(i) for i in range(11)]).train.labels[7] == 10


@pytest.mark.parametrize(
    "damage, message",
    [
        ("count", "has 30 images but .*train-labels-idx1-ubyte has 29 labels"),
        ("dtype", "IDX data type is float32, expected unsigned byte"),
        ("dims", "has 2 dimensions, expected 3"),
        ("extra", "bytes after the data"),
        ("missing", "missing t10k-labels-idx1-ubyte"),
        ("gzip", "corrupt or truncated gzip"),
    ],
)
def test_idx_inconsistent_files(tmp_path, damage, message):
    folder = tmp_path / "m"
    write_mnist_folder(folder, gz=False)
    if damage == "count":
        write_idx(folder / "train-labels-idx1-ubyte", np.zeros(29, np.uint8), gz=False)
    elif damage == "dtype":
        (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((30, 28, 28), ">f4"), 0x0D))
    elif damage == "dims":
        write_idx(folder / "train-images-idx3-ubyte", np.zeros((30, 784), np.uint8), gz=False)
    elif damage == "extra":
        with open(folder / "train-images-idx3-ubyte", "ab") as handle:
            handle.write(b"\0" * 5)
    elif damage == "missing":
        (folder / "t10k-labels-idx1-ubyte").unlink()
    elif damage == "gzip":
        (folder / "train-images-idx3-ubyte").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(KdlabError, match=message):
        load_dataset("idx", folder)


# ---------------------------------------------------------------------------------------------- CIFAR pickles


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def dump_official(path: Path, obj, numpy1_names: bool = False) -> None:
    """Pickle protocol 2 as the official Python 2 files; optionally with numpy 1's module name for arrays."""
    data = pickle.dumps(obj, protocol=2)
    if numpy1_names:
        data = data.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
        assert b"numpy._core" not in data
    path.write_bytes(data)


def write_cifar10(parent: Path, per_batch: int = 4, n_test: int = 6, numpy1_names: bool = False) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        rows = cifar_rows(per_batch, i)
        batch = {b"batch_label": f"training batch {i} of 5".encode(),
                 b"labels": [(i + j) % 10 for j in range(per_batch)], b"data": rows,
                 b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)]}
        dump_official(folder / f"data_batch_{i}", batch, numpy1_names)
    test = {b"batch_label": b"testing batch 1 of 1", b"labels": [j % 10 for j in range(n_test)],
            b"data": cifar_rows(n_test, 99), b"filenames": [f"t_{j}.png".encode() for j in range(n_test)]}
    dump_official(folder / "test_batch", test, numpy1_names)
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_vis": 3072}
    dump_official(folder / "batches.meta", meta, numpy1_names)
    return folder


def write_cifar100(parent: Path, n_train: int = 8, n_test: int = 5) -> Path:
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        fine = [(7 * j) % 100 for j in range(n)]
        dump_official(folder / name, {b"filenames": [b"f.png"] * n, b"batch_label": name.encode(),
                                      b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                                      b"data": cifar_rows(n, seed)})
    meta = {b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)]}
    dump_official(folder / "meta", meta)
    return folder


@pytest.mark.parametrize("numpy1_names", [False, True], ids=["numpy2-pickle", "numpy1-pickle"])
@pytest.mark.parametrize("give_parent", [False, True], ids=["folder", "parent"])
def test_cifar10_reader_and_pixel_layout(tmp_path, give_parent, numpy1_names):
    folder = write_cifar10(tmp_path, numpy1_names=numpy1_names)
    ds = load_dataset("cifar10", tmp_path if give_parent else folder)
    assert ds.classes == CIFAR10_CLASSES and ds.name == "cifar10"
    assert ds.train.images.shape == (20, 32, 32, 3) and ds.test.images.shape == (6, 32, 32, 3)
    assert ds.train.labels.tolist()[:5] == [1, 2, 3, 4, 2]
    # batch 2, row 1, pixel (y=3, x=5): red at 0*1024 + 3*32 + 5, green at 1024 + ..., blue at 2048 + ...
    row = cifar_rows(4, 2)[1]
    y, x = 3, 5
    expected = [row[c * 1024 + y * 32 + x] for c in range(3)]
    assert ds.train.images[4 + 1, y, x].tolist() == expected
    np.testing.assert_array_equal(ds.test.images[:, :, :, 2].reshape(6, -1), cifar_rows(6, 99)[:, 2048:])


def test_cifar_folder_or_parent_share_one_cache_entry(tmp_path, monkeypatch, count_decodes):
    folder = write_cifar10(tmp_path / "downloads")
    (tmp_path / "downloads" / "unrelated.txt").write_text("not part of CIFAR-10")
    calls = count_decodes("cifar10")
    by_folder = load_dataset("cifar10", folder)
    by_parent = load_dataset("cifar10", tmp_path / "downloads")
    assert len(calls) == 1 and by_parent.fingerprint == by_folder.fingerprint


def test_cifar100_reader_uses_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.name == "cifar100" and len(ds.classes) == 100 and ds.classes[7] == "fine07"
    assert ds.train.images.shape == (8, 32, 32, 3) and ds.test.images.shape == (5, 32, 32, 3)
    assert ds.train.labels.tolist() == [(7 * j) % 100 for j in range(8)]
    row = cifar_rows(5, 2)[4]
    assert ds.test.images[4, 31, 0].tolist() == [row[c * 1024 + 31 * 32] for c in range(3)]


def test_cifar_label_out_of_range(tmp_path):
    folder = write_cifar100(tmp_path)
    dump_official(folder / "test", {b"fine_labels": [0, 100], b"data": cifar_rows(2, 0)})
    with pytest.raises(KdlabError, match=f"{folder / 'test'}: label 100 .*out of range for 100 classes"):
        load_dataset("cifar100", folder)


def test_cifar_missing_and_malformed_files(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(KdlabError, match="missing data_batch_3"):
        load_dataset("cifar10", tmp_path)
    dump_official(folder / "data_batch_3", {b"labels": [0], b"data": np.zeros((1, 3000), np.uint8)})
    with pytest.raises(KdlabError, match="data_batch_3: 'data' must be N x 3072"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"labels": [0]}, protocol=2)[:-3])
    with pytest.raises(KdlabError, match="data_batch_3: not a readable pickle"):
        load_dataset("cifar10", tmp_path)


class RunsAShellCommand:
    """What a malicious pickle looks like: unpickling it would call os.system."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_cifar_pickle_with_forbidden_global_is_refused_and_not_run(tmp_path, data_cache_dir):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    dump_official(folder / "data_batch_1", {b"data": RunsAShellCommand(f"touch {marker}"), b"labels": []})
    with pytest.raises(KdlabError, match=rf"{folder / 'data_batch_1'}: refusing to unpickle (posix|os)\.system"):
        load_dataset("cifar10", folder)
    assert not marker.exists()
    assert cache_entries(data_cache_dir) == []


# ------------------------------------------------------------------------------------------------ image folders


def pixels(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    shape = (h, w, channels) if channels == 3 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image_folder(root: Path, splits: dict[str, dict[str, int]], suffix: str = ".png", size=(6, 5)) -> dict:
    """Write ``splits[split][class]`` images of ``size`` (h, w); return {split: [(pixels, class), ...]}."""
    written = {}
    seed = 0
    for split, classes in splits.items():
        written[split] = []
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed += 1
                array = pixels(*size, seed)
                Image.fromarray(array).save(root / split / name / f"{i:04d}{suffix}")
                written[split].append((array, name))
    return written


def test_folder_png_with_val_exact_pixels(tmp_path):
    layout = {"train": {"dog": 3, "cat": 2}, "val": {"cat": 1, "dog": 1}, "test": {"cat": 2, "dog": 2}}
    written = write_image_folder(tmp_path / "pets", layout)
    ds = load_dataset("folder", tmp_path / "pets")
    assert ds.classes == ["cat", "dog"] and ds.name == "pets"
    assert ds.train.images.shape == (5, 6, 5, 3) and ds.val.images.shape == (2, 6, 5, 3)
    assert ds.test.images.shape == (4, 6, 5, 3)
    for split_name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        # sorted classes, files in name order: class "cat" comes first although "dog" was written first
        expected = sorted(written[split_name], key=lambda item: item[1])
        for k, (array, name) in enumerate(expected):
            np.testing.assert_array_equal(split.images[k], array)
            assert ds.classes[split.labels[k]] == name


def test_folder_jpeg_uppercase_valid_folder_and_grey_mode(tmp_path):
    write_image_folder(tmp_path / "cinic", {"train": {"a": 2, "b": 2}, "valid": {"a": 1, "b": 1},
                                            "test": {"a": 1, "b": 1}}, suffix=".JPEG", size=(8, 8))
    ds = load_dataset("folder", tmp_path / "cinic")
    assert ds.val is not None and ds.train.images.shape == (4, 8, 8, 3) and ds.val.labels.tolist() == [0, 1]
    grey = load_dataset("folder", tmp_path / "cinic", mode="L")
    assert grey.train.images.shape == (4, 8, 8, 1) and grey.fingerprint != ds.fingerprint


def test_folder_grey_pngs_as_rgb(tmp_path):
    (tmp_path / "g" / "train" / "x").mkdir(parents=True)
    (tmp_path / "g" / "test" / "x").mkdir(parents=True)
    grey = pixels(4, 4, 1, channels=1)
    Image.fromarray(grey).save(tmp_path / "g" / "train" / "x" / "1.png")
    Image.fromarray(grey).save(tmp_path / "g" / "test" / "x" / "1.png")
    ds = load_dataset("folder", tmp_path / "g")
    assert ds.train.images.shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(ds.train.images[0], np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(load_dataset("folder", tmp_path / "g", mode="L").train.images[0, ..., 0], grey)


def small_folder(root: Path) -> Path:
    write_image_folder(root, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    return root


def test_folder_corrupt_image(tmp_path, data_cache_dir):
    root = small_folder(tmp_path / "d")
    bad = root / "train" / "b" / "0001.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(KdlabError, match=f"{bad}: not a readable JPEG or PNG image"):
        load_dataset("folder", root)
    assert cache_entries(data_cache_dir) == []


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_folder_truncated_image(tmp_path, suffix):
    root = tmp_path / "d"
    write_image_folder(root, {"train": {"a": 2}, "test": {"a": 1}}, suffix=suffix, size=(32, 32))
    bad = root / "test" / "a" / f"0000{suffix}"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(KdlabError, match=f"{bad}: not a readable JPEG or PNG image"):
        load_dataset("folder", root)


def test_folder_empty_class_folder(tmp_path):
    root = small_folder(tmp_path / "d")
    (root / "test" / "c").mkdir()
    (root / "train" / "c").mkdir()
    with pytest.raises(KdlabError, match=f"{root / 'train' / 'c'}: empty class folder"):
        load_dataset("folder", root)


def test_folder_mismatched_class_sets_name_both_folders(tmp_path):
    root = small_folder(tmp_path / "d")
    (root / "test" / "b").rename(root / "test" / "z")
    with pytest.raises(KdlabError, match=rf"between {root / 'train'} and {root / 'test'}: only in train: \['b'\]; "
                                         rf"only in test: \['z'\]"):
        load_dataset("folder", root)


def test_folder_mixed_sizes_names_the_file_and_sizes(tmp_path):
    root = small_folder(tmp_path / "d")
    odd = root / "test" / "b" / "0000.png"
    Image.fromarray(pixels(7, 9, 0)).save(odd)
    with pytest.raises(KdlabError, match=f"{odd}: image is 9x7 pixels but .*0000.png is 5x6"):
        load_dataset("folder", root)


def test_folder_missing_pieces(tmp_path):
    with pytest.raises(KdlabError, match=f"data folder not found: {tmp_path / 'nowhere'}"):
        load_dataset("folder", tmp_path / "nowhere")
    root = small_folder(tmp_path / "d")
    (root / "test" / "a" / "notes.txt").write_text("hi")
    with pytest.raises(KdlabError, match="notes.txt: not an image file"):
        load_dataset("folder", root)
    (root / "test" / "a" / "notes.txt").unlink()
    (root / "test").rename(root / "testing")
    with pytest.raises(KdlabError, match=f"{root}: missing test/ folder"):
        load_dataset("folder", root)
    with pytest.raises(KdlabError, match="option mode must be one of RGB, L"):
        load_dataset("folder", root, mode="CMYK")


def test_real_cifar10_jpeg_folder_and_cached_second_load(shared_data):
    cifar10_jpeg = shared_data("cifar10-jpeg")
    start = time.perf_counter()
    ds = load_dataset("folder", cifar10_jpeg)
    first = time.perf_counter() - start
    assert ds.classes == CIFAR10_CLASSES and ds.val is None
    assert ds.train.images.shape == (50000, 32, 32, 3) and ds.test.images.shape == (10000, 32, 32, 3)
    assert np.bincount(ds.train.labels).tolist() == [5000] * 10
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
    with Image.open(cifar10_jpeg / "test" / "truck" / sorted(os.listdir(cifar10_jpeg / "test" / "truck"))[-1]) as im:
        np.testing.assert_array_equal(ds.test.images[-1], np.asarray(im.convert("RGB")))
    start = time.perf_counter()
    again = load_dataset("folder", cifar10_jpeg)
    second = time.perf_counter() - start
    print(f"\nCIFAR-10 JPEG: first load (decode) {first:.2f} s, second load (cache) {second:.3f} s")
    # The cached load checks the files' sizes and times (60,000 stat calls) and maps one array file: it must be far
    # cheaper than decoding, whatever the file system's speed.
    assert second < max(first / 10, 0.5)
    assert again.fingerprint == ds.fingerprint
    np.testing.assert_array_equal(again.train.images[::997], ds.train.images[::997])


# --------------------------------------------------------------------------------------------------- the cache


def test_second_load_comes_from_the_cache_and_file_changes_invalidate_it(tmp_path, monkeypatch, count_decodes):
    write_mnist_folder(tmp_path / "m", gz=True)
    calls = count_decodes("idx")
    first = load_dataset("idx", tmp_path / "m")
    second = load_dataset("idx", tmp_path / "m")
    assert len(calls) == 1 and second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(second.train.images, first.train.images)
    assert second.train.images.flags.writeable
    labels = tmp_path / "m" / "train-labels-idx1-ubyte.gz"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    third = load_dataset("idx", tmp_path / "m")
    assert len(calls) == 2 and third.fingerprint != first.fingerprint
    load_dataset("idx", tmp_path / "m", classes=None)  # the default spelled out: same key
    assert len(calls) == 2


def test_cache_inside_the_data_folder_does_not_change_the_key(tmp_path, monkeypatch, count_decodes):
    write_mnist_folder(tmp_path / "m", gz=False)
    calls = count_decodes("idx")
    first = load_dataset("idx", tmp_path / "m", cache_dir=tmp_path / "m" / ".cache")
    second = load_dataset("idx", tmp_path / "m", cache_dir=tmp_path / "m" / ".cache")
    assert len(calls) == 1 and first.fingerprint == second.fingerprint


def test_leftover_temporary_entry_is_ignored(tmp_path, monkeypatch, data_cache_dir, count_decodes):
    write_mnist_folder(tmp_path / "m", gz=True)
    calls = count_decodes("idx")
    good = load_dataset("idx", tmp_path / "m")
    (entry,) = cache_entries(data_cache_dir)
    # what a writer killed before its rename leaves: a complete-looking copy under a temporary name
    leftover = entry.with_name(f".tmp-{entry.name}-deadbeef")
    entry.rename(leftover)
    (leftover / "test-images.npy").write_bytes(b"half")
    again = load_dataset("idx", tmp_path / "m")
    assert len(calls) == 2
    np.testing.assert_array_equal(again.test.images, good.test.images)
    assert leftover.exists() and entry.is_dir()  # a fresh leftover is left alone (its writer may still be alive)


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta", "missing"])
def test_corrupted_entry_is_rebuilt(tmp_path, monkeypatch, data_cache_dir, damage, count_decodes):
    write_mnist_folder(tmp_path / "m", gz=True)
    calls = count_decodes("idx")
    expected = load_dataset("idx", tmp_path / "m").train.images.copy()
    (entry,) = cache_entries(data_cache_dir)
    images = entry / "train-images.npy"
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:-1000])
    elif damage == "flip":
        data = bytearray(images.read_bytes())
        data[-500] ^= 0xFF
        images.write_bytes(bytes(data))
    elif damage == "meta":
        (entry / "meta.json").write_text("{not json")
    else:
        images.unlink()
    with pytest.warns(UserWarning, match="damaged data cache entry"):
        rebuilt = load_dataset("idx", tmp_path / "m")
    assert len(calls) == 2
    np.testing.assert_array_equal(rebuilt.train.images, expected)
    load_dataset("idx", tmp_path / "m")  # the rebuilt entry is good
    assert len(calls) == 2 and cache_entries(data_cache_dir) == [entry]


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch, data_cache_dir):
    write_mnist_folder(tmp_path / "m", gz=True)
    real_save = np.save
    saves = []

    def interrupted_save(*args, **kwargs):
        saves.append(1)
        if len(saves) == 3:
            raise KeyboardInterrupt
        real_save(*args, **kwargs)

    monkeypatch.setattr(data_cache.np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("idx", tmp_path / "m")
    assert list(data_cache_dir.iterdir()) == []
    monkeypatch.setattr(data_cache.np, "save", real_save)
    assert load_dataset("idx", tmp_path / "m").train.images.shape == (30, 28, 28, 1)


def test_killed_writer_leaves_nothing_that_loads(tmp_path, data_cache_dir):
    """SIGKILL a real writer half-way through an entry: no finally runs, and still no half entry is ever read."""
    write_mnist_folder(tmp_path / "m", gz=True)
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        real_save = np.save
        def slow_save(*args, **kwargs):
            real_save(*args, **kwargs)
            print("wrote one file", flush=True)
            time.sleep(60)
        np.save = slow_save
        from kdlab.data import load_dataset
        load_dataset("idx", {str(tmp_path / "m")!r})
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert writer.stdout.readline() == b"wrote one file\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    assert cache_entries(data_cache_dir) == [] and any(p.name.startswith(".tmp-") for p in data_cache_dir.iterdir())
    ds = load_dataset("idx", tmp_path / "m")
    assert ds.train.images.shape == (30, 28, 28, 1) and len(cache_entries(data_cache_dir)) == 1


# ------------------------------------------------------------------------------------------ validation splits


def indexed_dataset(n: int = 1000, classes: int = 4, val: Split | None = None) -> Dataset:
    """Images that carry their own sample index (two bytes), with unbalanced classes 40/30/20/10 %."""
    images = np.zeros((n, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    weights = np.array([4, 3, 2, 1])[:classes]
    labels = np.repeat(np.arange(classes), (weights * n // weights.sum())).astype(np.int64)
    test = Split(images[:10].copy(), labels[:10].copy())
    return Dataset("indexed", [f"c{i}" for i in range(classes)], Split(images, labels), test, val, "base")


def sample_ids(split: Split) -> np.ndarray:
    return split.images[:, 0, 0, 0].astype(int) * 256 + split.images[:, 0, 1, 0]


def test_carve_validation_is_stratified_disjoint_and_deterministic():
    ds = indexed_dataset()
    carved = carve_validation(ds, 200, seed=3)
    assert len(carved.val) == 200 and len(carved.train) == 800
    assert Counter(carved.val.labels.tolist()) == {0: 80, 1: 60, 2: 40, 3: 20}
    train_ids, val_ids = sample_ids(carved.train), sample_ids(carved.val)
    assert not set(train_ids) & set(val_ids) and sorted([*train_ids, *val_ids]) == list(range(1000))
    np.testing.assert_array_equal(ds.train.labels[val_ids], carved.val.labels)  # labels travel with images
    same = carve_validation(ds, 0.2, seed=3)  # the same count as a fraction: the same split
    np.testing.assert_array_equal(sample_ids(same.val), val_ids)
    assert same.fingerprint == carved.fingerprint != ds.fingerprint
    other = carve_validation(ds, 200, seed=4)
    assert set(sample_ids(other.val)) != set(val_ids) and other.fingerprint != carved.fingerprint


def test_carve_validation_size_zero_existing_val_and_bad_sizes():
    ds = indexed_dataset()
    assert carve_validation(ds, 0, seed=0) is ds and carve_validation(ds, 0.0, seed=0).val is None
    with_val = indexed_dataset(val=Split(np.zeros((3, 2, 2, 1), np.uint8), np.zeros(3, np.int64)))
    assert carve_validation(with_val, 100, seed=0) is with_val
    for bad in (1000, 5000, 1.5, -3, "10"):
        with pytest.raises(KdlabError, match="val_size"):
            carve_validation(ds, bad, seed=0)
    with pytest.raises(KdlabError, match="cannot take a stratified split of 2"):  # fewer than the 4 classes
        carve_validation(ds, 2, seed=0)


def test_load_dataset_val_size_matches_carve_validation():
    carved = load_dataset("digits", val_size=0.1, seed=7)
    direct = carve_validation(load_dataset("digits"), 0.1, 7)
    assert len(carved.val) == 144 and carved.fingerprint == direct.fingerprint
    np.testing.assert_array_equal(carved.val.images, direct.val.images)


# --------------------------------------------------------------------------------------- load_dataset's errors


def test_load_dataset_errors(tmp_path):
    known = "digits, idx, cifar10, cifar100, folder"
    with pytest.raises(KdlabError, match=f"unknown data source 'mnist'; known sources: {known}"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(KdlabError, match="data source idx has no option colour .*it takes classes"):
        load_dataset("idx", tmp_path, colour=True)
    with pytest.raises(KdlabError, match="data source idx needs a path"):
        load_dataset("idx")
    with pytest.raises(KdlabError, match="data source digits reads no files"):
        load_dataset("digits", tmp_path)
    for source in ("idx", "cifar10", "cifar100", "folder"):
        with pytest.raises(KdlabError, match=f"^data folder not found: {tmp_path / 'missing'}$"):
            load_dataset(source, tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(KdlabError, match="data path is not a folder"):
        load_dataset("cifar10", tmp_path / "file")
    with pytest.raises(KdlabError, match="not a cifar-10-batches-py folder, missing data_batch_1"):
        load_dataset("cifar10", tmp_path)
