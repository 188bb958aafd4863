"""A local Hugging Face ``datasets`` copy: the folder ``DatasetDict.save_to_disk`` writes (``dataset_dict.json`` and
one folder of arrow files per split), read with the ``datasets`` library (extra ``kdlab[datasets]``), offline.

The image column (option ``image``; default: the first column of feature type ``Image``) holds each image's encoded
bytes (or a path to it); the label column (option ``label``; default: the first ``ClassLabel`` column, else
``label``) holds integer labels, whose names come from the ``ClassLabel`` feature (else option ``classes``, else
``0 .. K-1``). Splits: option ``train`` (default ``train``), ``test`` (default ``test``, or ``validation`` when
there is no ``test``, as for ImageNet copies whose held-out set is the validation split), ``val`` (default none:
carve it with ``data.val_size``).

Arrow files are memory-mapped, so a split is addressable row by row without loading it: ``data.residency: stream``
reads the encoded bytes of the rows of each batch (:class:`ArrowImages`) in its workers, decodes them with the code
of image folders and keeps the in-memory path's epoch plan, so a streamed run equals the decoded one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdlab.data.dataset import Dataset
from kdlab.data.files import ImageFiles
from kdlab.data.sources.common import checked_labels, class_names, data_folder, make_split
from kdlab.data.sources.image_files import CHANNELS
from kdlab.errors import KdlabError

_OPEN: dict[tuple[str, str], object] = {}  # (folder, split) -> arrow table, opened once per process


def _datasets():
    try:
        import datasets
    except ImportError:
        raise KdlabError("data source hf needs the datasets library: pip install 'kdlab[datasets]'") from None
    return datasets


def _load(root: Path):
    datasets = _datasets()
    try:
        loaded = datasets.load_from_disk(str(root))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise KdlabError(f"{root}: not a Hugging Face datasets folder written by save_to_disk ({error})") from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise KdlabError(f"{root}: holds one split; save a DatasetDict with train and test splits")
    return loaded


def _table(folder: str, split: str):
    key = (folder, split)
    if key not in _OPEN:
        _OPEN[key] = _load(Path(folder))[split].data
    return _OPEN[key]


class ArrowImages(ImageFiles):
    """Rows ``rows`` of the image column ``column`` of split ``split`` of the datasets folder ``folder``."""

    def __init__(self, folder: str, split: str, column: str, rows, height: int, width: int, mode: str = "RGB",
                 size: int | None = None):
        self.folder, self.split, self.column = str(folder), split, column
        self.rows = np.asarray(rows, dtype=np.int64)
        self.paths = self.rows  # what len() and shape count
        self.height, self.width, self.mode, self.size = int(height), int(width), mode, size

    def take(self, rows: np.ndarray) -> "ArrowImages":
        return ArrowImages(self.folder, self.split, self.column, self.rows[rows], self.height, self.width,
                           self.mode, self.size)

    def read(self, position: int) -> tuple[str, bytes]:
        row = int(self.rows[position])
        name = f"{self.folder} [{self.split}] row {row}"
        value = _table(self.folder, self.split).column(self.column)[row].as_py()
        if isinstance(value, dict) and value.get("bytes") is not None:
            return name, value["bytes"]
        path = value.get("path") if isinstance(value, dict) else None
        if not path:
            raise KdlabError(f"{name}: column {self.column} holds no image bytes or path")
        try:
            return f"{name} ({path})", Path(path).read_bytes()
        except OSError as error:
            raise KdlabError(f"{name}: cannot read image file {path}: {error.strerror or error}") from None


def _columns(split, image: str | None, label: str | None, root: Path) -> tuple[str, str, list[str] | None]:
    datasets = _datasets()
    features = split.features
    if image is None:
        image = next((n for n, f in features.items() if isinstance(f, datasets.Image)), None)
        if image is None:
            raise KdlabError(f"{root}: no column of feature type Image (name one with option image)")
    if label is None:
        label = next((n for n, f in features.items() if isinstance(f, datasets.ClassLabel)), "label")
    for what, name in (("image", image), ("label", label)):
        if name not in features:
            raise KdlabError(f"{root}: no {what} column {name!r} (columns: {', '.join(features)})")
    names = features[label].names if isinstance(features[label], datasets.ClassLabel) else None
    return image, label, names


def list_hf(path: str, *, train: str = "train", test: str | None = None, val: str | None = None,
            image: str | None = None, label: str | None = None, classes: list[str] | None = None,
            mode: str = "RGB", size: int | None = None) -> Dataset:
    """The datasets folder ``path`` as a :class:`Dataset` of :class:`ArrowImages` (nothing decoded)."""
    from kdlab.data.sources.folder import make_split_of_files
    from kdlab.data.sources.image_files import decode

    root = data_folder(path)
    if mode not in CHANNELS:
        raise KdlabError(f"{root}: option mode must be one of {', '.join(CHANNELS)}, got {mode!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise KdlabError(f"{root}: option size must be a positive whole number of pixels, got {size!r}")
    loaded = _load(root)
    if test is None:
        test = "test" if "test" in loaded else "validation"
    names = {"train": train, "test": test, **({"val": val} if val is not None else {})}
    for role, name in names.items():
        if name not in loaded:
            raise KdlabError(f"{root}: no split {name!r} (option {role}; splits: {', '.join(loaded)})")
    image_column, label_column, label_names = _columns(loaded[train], image, label, root)
    labels = {role: np.asarray(loaded[name].data.column(label_column).to_numpy(zero_copy_only=False))
              for role, name in names.items()}
    if classes is None:
        classes = label_names or [str(i) for i in range(int(max(v.max() for v in labels.values())) + 1)]
    classes = class_names(classes, f"{root}: option classes")
    splits = {}
    for role, name in names.items():
        checked = checked_labels(labels[role], len(classes), f"{root} [{name}]")
        files = ArrowImages(str(root), name, image_column, np.arange(len(checked)), 1, 1, mode, size)
        splits[role] = (files, checked)
    if not len(splits["train"][1]):
        raise KdlabError(f"{root}: split {train!r} is empty")
    height, width = (size, size) if size is not None else decode(*splits["train"][0].read(0), mode).shape[:2]
    for role, (files, checked) in splits.items():
        files.height, files.width = int(height), int(width)
        splits[role] = make_split_of_files(files, checked)
    return Dataset(name=root.name, classes=classes, train=splits["train"], test=splits["test"],
                   val=splits.get("val"), fingerprint="")


def decode_hf(path: str, *, train: str = "train", test: str | None = None, val: str | None = None,
              image: str | None = None, label: str | None = None, classes: list[str] | None = None,
              mode: str = "RGB", size: int | None = None) -> Dataset:
    """The datasets folder ``path`` decoded whole (options as in :func:`list_hf`)."""
    listed = list_hf(path, train=train, test=test, val=val, image=image, label=label, classes=classes, mode=mode,
                     size=size)
    return Dataset(name=listed.name, classes=listed.classes, fingerprint="", **{
        name: None if split is None else make_split(split.images.decode(), split.labels)
        for name, split in (("train", listed.train), ("test", listed.test), ("val", listed.val))})
