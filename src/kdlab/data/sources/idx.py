"""The IDX files of the MNIST family (MNIST, Fashion-MNIST, KMNIST, ...), gzipped or not.

Format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): two zero bytes, a type byte (0x08 unsigned
byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of dimensions,
then each dimension as a big-endian uint32, then the data in C order, big-endian. Images are
``{train,t10k}-images-idx3-ubyte`` (N x rows x cols unsigned bytes) and labels ``{train,t10k}-labels-idx1-ubyte``
(N unsigned bytes); each may end in ``.gz``, and ``.idx3-ubyte`` with a dot (as some copies name them) is accepted
too. The official split is kept: train = ``train-*``, test = ``t10k-*``.

Class names: Fashion-MNIST's ten if the folder name contains "fashion", else the digits "0".."9"; a ``classes``
list overrides both (e.g. for KMNIST or EMNIST).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from kdlab.data.dataset import Dataset, Split
from kdlab.data.sources.common import checked_labels, class_names, data_folder, make_split
from kdlab.errors import KdlabError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
DIGIT_CLASSES = [str(d) for d in range(10)]

IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
UNSIGNED_BYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


def find_idx_file(folder: Path, split: str, kind: str, ndim: int) -> Path:
    """The file holding ``kind`` ("images" or "labels") of ``split`` ("train" or "t10k"), plain preferred to .gz."""
    stems = [f"{split}-{kind}-idx{ndim}-ubyte", f"{split}-{kind}.idx{ndim}-ubyte"]
    for name in (stem + suffix for suffix in ("", ".gz") for stem in stems):
        if (folder / name).is_file():
            return folder / name
    raise KdlabError(f"{folder}: missing {stems[0]} (or {stems[0]}.gz)")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The unsigned-byte array of ``ndim`` dimensions stored in IDX file ``path`` (gzipped or not)."""
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise KdlabError(f"{path}: corrupt or truncated gzip data: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        magic = raw[:4].hex(" ") or "missing"
        raise KdlabError(f"{path}: not an IDX file (magic bytes {magic}, expected 00 00 08 0{ndim})")
    type_code, dims_count = raw[2], raw[3]
    if type_code != UNSIGNED_BYTE:
        found = IDX_TYPES.get(type_code, f"unknown type 0x{type_code:02x}")
        raise KdlabError(f"{path}: IDX data type is {found}, expected unsigned byte (0x08)")
    if dims_count != ndim:
        raise KdlabError(f"{path}: IDX file has {dims_count} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise KdlabError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected, found = int(np.prod(dims, dtype=np.int64)), len(raw) - header
    if found < expected:
        raise KdlabError(f"{path}: truncated IDX file: dimensions {dims} need {expected} data bytes, found {found}")
    if found > expected:
        raise KdlabError(f"{path}: IDX file has {found - expected} bytes after the data of dimensions {dims}")
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()


def read_idx_split(folder: Path, split: str, num_classes: int) -> Split:
    """Images and labels of one split, checked against each other and against the number of classes."""
    images_path = find_idx_file(folder, split, "images", 3)
    labels_path = find_idx_file(folder, split, "labels", 1)
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise KdlabError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    if 0 in images.shape[1:]:
        raise KdlabError(f"{images_path}: images of size {images.shape[1]}x{images.shape[2]}")
    return make_split(images[..., None], checked_labels(labels, num_classes, labels_path))


def decode_idx(path: str, *, classes: Sequence[str] | None = None) -> Dataset:
    """The IDX files in folder ``path`` as 28x28x1 (or whatever the header says) images, official split kept."""
    folder = data_folder(path)
    if classes is not None:
        names = class_names(classes, f"{folder} classes")
    elif "fashion" in folder.name.lower():
        names = FASHION_MNIST_CLASSES
    else:
        names = DIGIT_CLASSES
    return Dataset(
        name=folder.name,
        classes=list(names),
        train=read_idx_split(folder, "train", len(names)),
        test=read_idx_split(folder, "t10k", len(names)),
        val=None,
        fingerprint="",
    )
