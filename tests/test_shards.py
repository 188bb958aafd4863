"""Sharded and arrow sources: WebDataset tar shards (written here by the webdataset library) and a local Hugging
Face ``datasets`` copy give the very samples of the image folder they were made from, stream like it, and bad shards
are one-line errors."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from kdlab.data import load_dataset
from kdlab.data.loader import DeviceLoader
from kdlab.data.stream import StreamLoader
from kdlab.errors import KdlabError
from tests._cli import CIFAR10_CLASSES, assert_user_error, kdlab_main, write_recipe

STATS = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}


def _folder_samples(root, split):
    files = sorted((root / split).glob("*/*.jpg")) or sorted((root / split).glob("*/*"))
    classes = sorted(p.name for p in (root / "train").iterdir())
    return [(f, classes.index(f.parent.name)) for f in files]


@pytest.fixture(scope="module")
def shards(cifar_subset, tmp_path_factory):
    """The cifar_subset folder as WebDataset shards (train in 3 shards, test in 1), written with webdataset."""
    import webdataset as wds

    out = tmp_path_factory.mktemp("shards")
    for split, per_shard in (("train", 100), ("test", 1000)):
        samples = _folder_samples(cifar_subset, split)
        for start in range(0, len(samples), per_shard):
            with wds.TarWriter(str(out / f"{split}-{start // per_shard:06d}.tar")) as sink:
                for i, (file, label) in enumerate(samples[start : start + per_shard]):
                    sink.write({"__key__": f"{split}_{start + i:05d}", "jpg": file.read_bytes(), "cls": label})
    (out / "classes.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n")
    return out


def test_shards_hold_the_samples_of_the_folder(cifar_subset, shards, private_cache):
    folder = load_dataset("folder", cifar_subset)
    sharded = load_dataset("webdataset", shards)
    streamed = load_dataset("webdataset", shards, residency="stream")
    assert sharded.classes == folder.classes == CIFAR10_CLASSES
    for name in ("train", "test"):
        a, b = getattr(folder, name), getattr(sharded, name)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(getattr(streamed, name).images.decode(), b.images)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_shards_give_the_device_batches(shards, private_cache, workers):
    from kdlab.data.augment import CropFlip

    device = load_dataset("webdataset", shards, val_size=20, seed=3)
    streamed = load_dataset("webdataset", shards, val_size=20, seed=3, residency="stream")
    common = dict(shuffle=True, augment=CropFlip(4, "zero", True), seed=2, **STATS)
    pairs = zip(DeviceLoader(device.train, "cpu", 32, **common).batches(1),
                StreamLoader(streamed.train, "cpu", 32, workers=workers, **common).batches(1), strict=True)
    for (x_d, y_d), (x_s, y_s) in pairs:
        assert torch.equal(x_d, x_s) and torch.equal(y_d, y_s)


def _write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_shards_are_one_line_errors(shards, tmp_path, private_cache):
    import shutil

    def copy():
        target = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(shards, target)
        return target

    empty = copy()
    _write_tar(empty / "train-000009.tar", [])
    with pytest.raises(KdlabError, match=r"train-000009.tar: the shard holds no samples"):
        load_dataset("webdataset", empty)
    corrupt = copy()
    (corrupt / "train-000001.tar").write_bytes(b"\x00garbage" * 50 + b"not a tar")
    with pytest.raises(KdlabError, match=r"train-000001.tar: not a readable uncompressed tar shard"):
        load_dataset("webdataset", corrupt)
    no_label = copy()
    _write_tar(no_label / "train-000009.tar", [("x_1.jpg", (shards / "classes.txt").read_bytes())])
    with pytest.raises(KdlabError, match=r"sample x_1 has no label member .cls"):
        load_dataset("webdataset", no_label)
    bad_label = copy()
    _write_tar(bad_label / "train-000009.tar", [("y.jpg", b"\xff\xd8"), ("y.cls", b"12")])
    with pytest.raises(KdlabError, match=r"label 12 \(sample 300\) is out of range for 10 classes"):
        load_dataset("webdataset", bad_label)
    undecodable = copy()
    _write_tar(undecodable / "train-000009.tar", [("z.jpg", b"\xff\xd8 broken"), ("z.cls", b"1")])
    with pytest.raises(KdlabError, match=r"train-000009.tar:z.jpg"):
        load_dataset("webdataset", undecodable)
    with pytest.raises(KdlabError, match=r"no test shards match 'missing-\*.tar' \(option test\)"):
        load_dataset("webdataset", shards, test="missing-*.tar")


def test_a_bad_shard_stops_a_run_in_one_line_and_writes_nothing(shards, tmp_path, private_cache):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shards, data)
    (data / "test-000000.tar").write_bytes((data / "test-000000.tar").read_bytes()[:700])  # truncated
    recipe = write_recipe(tmp_path, {"data": {"source": "webdataset", "path": str(data), "residency": "stream"},
                                     "model": {"name": "cnn_small8"}, "train": {"epochs": 1},
                                     "runtime": {"progress": False}})
    assert_user_error(kdlab_main("train", recipe, "--out", tmp_path / "run"), "test-000000.tar")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def hf_folder(cifar_subset, tmp_path_factory):
    """The cifar_subset folder saved as a Hugging Face DatasetDict (train, validation) with embedded JPEG bytes."""
    import datasets

    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=CIFAR10_CLASSES)})
    splits = {}
    for split, name in (("train", "train"), ("test", "validation")):
        samples = _folder_samples(cifar_subset, split)
        splits[name] = datasets.Dataset.from_dict(
            {"img": [{"bytes": f.read_bytes(), "path": None} for f, _ in samples],
             "fine_label": [label for _, label in samples]}, features=features)
    out = tmp_path_factory.mktemp("hf") / "cifar-subset"
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return out


def test_a_datasets_folder_holds_the_samples_of_the_folder(cifar_subset, hf_folder, private_cache):
    folder = load_dataset("folder", cifar_subset)
    copy = load_dataset("hf", hf_folder)  # test split: "validation" (there is no "test")
    streamed = load_dataset("hf", hf_folder, residency="stream")
    assert copy.classes == CIFAR10_CLASSES
    for name in ("train", "test"):
        a, b = getattr(folder, name), getattr(copy, name)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(getattr(streamed, name).images.decode(), b.images)
    common = dict(shuffle=True, seed=4, **STATS)
    pairs = zip(DeviceLoader(copy.train, "cpu", 64, **common).batches(0),
                StreamLoader(streamed.train, "cpu", 64, workers=2, **common).batches(0), strict=True)
    assert all(torch.equal(xd, xs) and torch.equal(yd, ys) for (xd, yd), (xs, ys) in pairs)


def test_bad_datasets_folders_are_one_line_errors(hf_folder, tmp_path, private_cache):
    with pytest.raises(KdlabError, match="not a Hugging Face datasets folder written by save_to_disk"):
        load_dataset("hf", tmp_path)
    with pytest.raises(KdlabError, match=r"no split 'test' \(option test; splits: train, validation\)"):
        load_dataset("hf", hf_folder, test="test")
    with pytest.raises(KdlabError, match=r"no image column 'picture' \(columns: img, fine_label\)"):
        load_dataset("hf", hf_folder, image="picture")


def test_a_missing_datasets_library_says_which_extra_to_install(hf_folder, monkeypatch, private_cache):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(KdlabError, match=r"data source hf needs the datasets library: pip install 'kdlab\[datasets\]'"):
        load_dataset("hf", hf_folder, residency="stream")  # (decoded, it could come from the data cache)


def test_each_rank_reads_only_its_share_of_the_shards(shards, private_cache, monkeypatch):
    """Under torchrun (here: two ranks simulated in one process) a streamed split is read once in all: each rank
    decodes only its part of every training batch, of the evaluation split, and of the statistics sample."""
    from kdlab.data.files import TarMembers
    from kdlab.train.distributed import Distributed
    from kdlab.train.inputs import streamed_stats

    read: list[str] = []
    original = TarMembers.read
    monkeypatch.setattr(TarMembers, "read", lambda self, i: read.append(original(self, i)[0]) or original(self, i))
    streamed = load_dataset("webdataset", shards, residency="stream")
    per_rank = []
    for rank in (0, 1):
        read.clear()
        ranks = Distributed(rank, 2, rank, "gloo")
        train = StreamLoader(streamed.train, "cpu", 64, workers=0, shuffle=True, seed=1, distributed=ranks, **STATS)
        test = StreamLoader(streamed.test, "cpu", 64, workers=0, distributed=ranks, **STATS)
        for loader in (train, test):
            for _ in loader.batches(0):
                pass
        per_rank.append(list(read))
    train_reads = [set(r) for r in per_rank]
    assert not train_reads[0] & train_reads[1]  # no sample read by both ranks
    assert len(train_reads[0] | train_reads[1]) == len(streamed.train) + len(streamed.test)
    assert all(len(r) <= (len(streamed.train) + len(streamed.test)) / 2 + 64 for r in per_rank)

    class OneRank(Distributed):  # a rank whose all_reduce records its partial sums instead of adding
        def all_reduce_sum(self, tensor):
            self.sums.append(tensor.clone())
            return tensor

    whole = streamed_stats([streamed.train.images], "cpu")
    partial = []
    for rank in (0, 1):
        read.clear()
        ranks = OneRank(rank, 2, rank, "gloo")
        object.__setattr__(ranks, "sums", [])
        streamed_stats([streamed.train.images], "cpu", ranks)
        assert len(read) == len(streamed.train) // 2
        partial.append(ranks.sums[0])
    from kdlab.data.loader import stats_from_sums

    assert stats_from_sums((partial[0] + partial[1]).numpy()) == whole
