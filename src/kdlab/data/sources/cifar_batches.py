"""Reading the official CIFAR-10 / CIFAR-100 "python version" files (https://www.cs.toronto.edu/~kriz/cifar.html).

Each data file is a pickled dict (Python 2, protocol 2) with ``b"data"``, a uint8 array N x 3072, and a label list
(``b"labels"`` in CIFAR-10, ``b"fine_labels"`` / ``b"coarse_labels"`` in CIFAR-100). A row holds the red plane, then
the green plane, then the blue plane, each 32 x 32 in row-major order; it becomes one 32 x 32 x 3 NHWC image. The
meta file is a pickled dict holding the class names (``b"label_names"`` or ``b"fine_label_names"``). Files are
loaded with the restricted unpickler, never with plain ``pickle.load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from kdlab.data.dataset import Split
from kdlab.data.sources.common import checked_labels, data_folder, make_split
from kdlab.data.sources.restricted_pickle import load_restricted_pickle
from kdlab.errors import KdlabError

SIDE = 32
ROW_BYTES = 3 * SIDE * SIDE


def cifar_folder(path: str, folder_name: str, required: Sequence[str]) -> Path:
    """The folder holding the ``required`` files: ``path`` itself, or ``path/folder_name``."""
    given = data_folder(path)
    for candidate in (given, given / folder_name):
        if all((candidate / name).is_file() for name in required):
            return candidate
    looked = given / folder_name if (given / folder_name).is_dir() else given
    missing = [name for name in required if not (looked / name).is_file()]
    raise KdlabError(f"{looked}: not a {folder_name} folder, missing {', '.join(missing)}")


def load_dict(path: Path) -> dict[str, object]:
    """The pickled dict in ``path`` with its keys as str (the official files have bytes keys)."""
    loaded = load_restricted_pickle(path)
    if not isinstance(loaded, dict):
        raise KdlabError(f"{path}: expected a pickled dict, found {type(loaded).__name__}")
    return {(k.decode("latin-1") if isinstance(k, bytes) else str(k)): v for k, v in loaded.items()}


def entry(contents: dict[str, object], key: str, path: Path):
    if key not in contents:
        raise KdlabError(f"{path}: no {key!r} entry (found {', '.join(sorted(contents)) or 'none'})")
    return contents[key]


def read_names(path: Path, key: str) -> list[str]:
    """The class names under ``key`` in the meta file ``path``."""
    names = entry(load_dict(path), key, path)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise KdlabError(f"{path}: {key!r} must be a non-empty list of names")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def rows_to_nhwc(rows: np.ndarray) -> np.ndarray:
    """N x 3072 rows (R plane, G plane, B plane, each 32 x 32 row-major) as N x 32 x 32 x 3."""
    return np.ascontiguousarray(rows.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))


def read_batch(path: Path, label_key: str, num_classes: int) -> Split:
    """One data file as a split: its ``data`` rows as NHWC images and its ``label_key`` labels."""
    contents = load_dict(path)
    data = np.asarray(entry(contents, "data", path))
    if data.ndim != 2 or data.shape[1] != ROW_BYTES:
        raise KdlabError(f"{path}: 'data' must be N x {ROW_BYTES} (3 x 32 x 32 pixels per row), got shape {data.shape}")
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise KdlabError(f"{path}: 'data' must hold bytes 0..255, got {data.dtype}")
        data = data.astype(np.uint8)
    labels = checked_labels(entry(contents, label_key, path), num_classes, path)
    if labels.shape[0] != data.shape[0]:
        raise KdlabError(f"{path}: {data.shape[0]} images but {labels.shape[0]} {label_key}")
    return make_split(rows_to_nhwc(data), labels)


def concatenate(splits: Sequence[Split]) -> Split:
    return make_split(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))
