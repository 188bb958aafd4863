"""WebDataset tar shards: ``train-000000.tar ...`` and ``test-000000.tar ...`` in one folder.

The WebDataset convention (Aizman et al. 2020; the ``webdataset`` library writes it with ``ShardWriter``): a shard
is an uncompressed POSIX tar whose consecutive members with one *key* form a sample, the key being the member path up
to the first dot of its file name and the rest its extension: ``n01440764_10026.jpg`` + ``n01440764_10026.cls``.
A sample here needs one image (``jpg``, ``jpeg``, ``png`` or ``webp``, the first present) and an integer label in
the member named by option ``label`` (default ``cls``: the label as decimal text); other members are ignored.

Shards are indexed, not unpacked: reading every tar header once gives each sample's (shard, byte offset, length), so
training draws samples in any order with one seek each (:class:`~kdlab.data.files.TarMembers`). That keeps the
epoch plan of the in-memory path (a global permutation and per-sample views, a pure function of (seed, epoch)), so a
streamed run from shards equals the decoded run and resumes exactly; and under torchrun each rank reads only the
samples of its share of every batch. Shards must be local files (a compressed ``.tar.gz`` shard cannot be seeked
into and is refused).

Options: ``train`` / ``test`` / ``val`` are glob patterns of shard names in the folder (defaults ``train-*.tar`` and
``test-*.tar``; ``val`` none: carve it with ``data.val_size``), ``classes`` the class names in label order (else
the lines of ``classes.txt`` in the folder, else ``0 .. K-1`` for the labels present), ``mode`` and ``size`` as for
image folders (photos of many sizes need ``size``). An empty or unreadable shard, a sample without image or label,
or a label out of range is a one-line error naming the shard and member.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from kdlab.data.dataset import Dataset
from kdlab.data.sources.common import checked_labels, class_names, data_folder, make_split
from kdlab.data.sources.image_files import CHANNELS
from kdlab.errors import KdlabError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def _split_key(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (extension.lower() if dot else "")


def index_shard(shard: Path, label: str) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    """(member names, (offset, length) of each sample's image, label texts) of one shard, in tar order."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    key, extension = _split_key(member.name)
                    samples.setdefault(key, {})[extension] = member
            labels = {key: tar.extractfile(parts[label]).read().decode("utf-8", "replace").strip()
                      for key, parts in samples.items() if label in parts}
    except (tarfile.TarError, OSError, EOFError) as error:
        raise KdlabError(f"{shard}: not a readable uncompressed tar shard ({error})") from None
    if not samples:
        raise KdlabError(f"{shard}: the shard holds no samples")
    names, spans, texts = [], [], []
    for key, parts in samples.items():
        image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
        if image is None:
            raise KdlabError(f"{shard}: sample {key} has no image ({', '.join(IMAGE_EXTENSIONS)}); it has "
                             f"{', '.join(sorted(parts)) or 'nothing'}")
        if key not in labels:
            raise KdlabError(f"{shard}: sample {key} has no label member .{label}")
        names.append(image.name)
        spans.append((image.offset_data, image.size))
        texts.append(labels[key])
    return names, spans, texts


def _shards(root: Path, pattern: str, split: str) -> list[Path]:
    shards = sorted(p for p in root.glob(pattern) if p.is_file())
    if not shards:
        raise KdlabError(f"{root}: no {split} shards match {pattern!r} (option {split})")
    return shards


def _labels(texts: list[str], shards: list[Path], where: Path) -> np.ndarray:
    try:
        return np.array([int(t) for t in texts], dtype=np.int64)
    except ValueError:
        bad = next(t for t in texts if not t.lstrip("-").isdigit())
        raise KdlabError(f"{where}: label {bad!r} of a sample in {shards[0].parent} is not a whole number") from None


def list_webdataset(path: str, *, train: str = "train-*.tar", test: str = "test-*.tar", val: str | None = None,
                    label: str = "cls", classes: list[str] | None = None, mode: str = "RGB",
                    size: int | None = None) -> Dataset:
    """The shards under ``path`` as a :class:`Dataset` of :class:`~kdlab.data.files.TarMembers` (indexed, nothing
    decoded): what ``data.residency: stream`` reads."""
    from kdlab.data.files import TarMembers
    from kdlab.data.sources.folder import make_split_of_files

    root = data_folder(path)
    if mode not in CHANNELS:
        raise KdlabError(f"{root}: option mode must be one of {', '.join(CHANNELS)}, got {mode!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise KdlabError(f"{root}: option size must be a positive whole number of pixels, got {size!r}")
    indexed = {}
    for split, pattern in (("train", train), ("test", test), ("val", val)):
        if pattern is None:
            continue
        shards, paths, spans, names, texts = _shards(root, pattern, split), [], [], [], []
        for shard in shards:
            shard_names, shard_spans, shard_texts = index_shard(shard, label)
            paths += [str(shard)] * len(shard_names)
            names += shard_names
            spans += shard_spans
            texts += shard_texts
        indexed[split] = (paths, spans, names, _labels(texts, shards, root))
    if classes is None and (root / "classes.txt").is_file():
        classes = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    if classes is None:
        classes = [str(i) for i in range(int(max(int(v[3].max()) for v in indexed.values())) + 1)]
    classes = class_names(classes, f"{root}: option classes")
    splits = {}
    for split, (paths, spans, names, labels) in indexed.items():
        labels = checked_labels(labels, len(classes), f"{root} ({split} shards)")
        splits[split] = (TarMembers(paths, np.asarray(spans), names, 1, 1, mode, size), labels)
    if size is None:
        first = splits["train"][0]
        from kdlab.data.sources.image_files import decode

        height, width = decode(*first.read(0), mode).shape[:2]
    else:
        height = width = size
    for split, (images, labels) in splits.items():
        images.height, images.width = int(height), int(width)
        splits[split] = make_split_of_files(images, labels)
    return Dataset(name=root.name, classes=classes, train=splits["train"], test=splits["test"],
                   val=splits.get("val"), fingerprint="")


def decode_webdataset(path: str, *, train: str = "train-*.tar", test: str = "test-*.tar", val: str | None = None,
                      label: str = "cls", classes: list[str] | None = None, mode: str = "RGB",
                      size: int | None = None) -> Dataset:
    """The shards under ``path`` decoded whole (options as in :func:`list_webdataset`)."""
    listed = list_webdataset(path, train=train, test=test, val=val, label=label, classes=classes, mode=mode,
                             size=size)
    return Dataset(name=listed.name, classes=listed.classes, fingerprint="", **{
        name: None if split is None else make_split(split.images.decode(), split.labels)
        for name, split in (("train", listed.train), ("test", listed.test), ("val", listed.val))})
