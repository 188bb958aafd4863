"""Checks shared by every source: the data folder exists, class names are sane, labels are in range."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from kdlab.data.dataset import Split
from kdlab.errors import KdlabError


def data_folder(path: str | os.PathLike) -> Path:
    """``path`` as an absolute folder path; a missing path or a file is a :class:`KdlabError`."""
    folder = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not folder.exists():
        raise KdlabError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise KdlabError(f"data path is not a folder: {folder}")
    return folder


def class_names(names: Sequence[str], where: str) -> list[str]:
    """A user-given list of class names, checked: at least one, all non-empty strings, no repeats."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise KdlabError(f"{where}: classes must be a list of names, got {names!r}")
    names = list(names)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise KdlabError(f"{where}: classes must be a non-empty list of non-empty names, got {names!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise KdlabError(f"{where}: class names repeat: {', '.join(repeated)}")
    return names


def checked_labels(labels: np.ndarray, num_classes: int, where: str | os.PathLike) -> np.ndarray:
    """``labels`` as int64, each in ``0 .. num_classes - 1``; else a KdlabError naming ``where`` and the value."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise KdlabError(f"{where}: labels must be a list of whole numbers, got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise KdlabError(f"{where}: label {labels[bad[0]]} (sample {bad[0]}) is out of range for {num_classes} "
                         f"classes (0..{num_classes - 1})")
    return labels


def make_split(images: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> Split:
    """A :class:`Split` owning C-contiguous, writable copies-if-needed of ``images`` (uint8 NHWC, or int16 N x L
    waveforms, kept int16), ``labels`` and ``groups``."""
    images = np.ascontiguousarray(images, dtype=np.int16 if np.asarray(images).dtype == np.int16 else np.uint8)
    if not images.flags.writeable:
        images = images.copy()
    groups = None if groups is None else np.ascontiguousarray(groups, dtype=np.int64)
    return Split(images, np.ascontiguousarray(labels, dtype=np.int64), groups=groups)
