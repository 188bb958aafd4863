"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never a torn one.

Each write goes to a temporary file ``.<name>.<random>.tmp`` in the target's folder, is flushed and fsynced, and is
renamed over the target with ``os.replace``; the folder is fsynced after the rename so the new name survives a power
cut. A write that fails (a full disk, a read-only folder) removes its temporary file, leaves the target as it was
and raises :class:`WriteError`, a one-line user-facing error naming the file. A process killed mid-write leaves at
most a temporary file, which :func:`remove_temporaries` clears (run directories do it when a run resumes).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from kdlab import faults
from kdlab.errors import KdlabError

TEMP_SUFFIX = ".tmp"


class WriteError(KdlabError):
    """A file could not be written (ENOSPC, EIO, EROFS, EACCES ...); the previous version of it is intact."""


def remove_temporaries(folder: str | Path) -> int:
    """Delete the temporary files that killed atomic writes left in ``folder`` (not recursive); return how many."""
    removed = 0
    for entry in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        try:
            entry.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, atomically."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        faults.before_publish(path.name, str(path))
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError):
            raise WriteError(f"cannot write {path}: {error.strerror or error}; its previous version is intact") \
                from None
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def atomic_savez(path: str | Path, compressed: bool = False, **arrays: np.ndarray) -> None:
    """``numpy.savez`` (or ``savez_compressed``; no pickled objects) written atomically."""
    save = np.savez_compressed if compressed else np.savez
    atomic_write(path, lambda handle: save(handle, **{k: np.asarray(v) for k, v in arrays.items()}))


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a predictions file (``logits`` N x K floats, ``labels`` N integers, optional ``groups``), read
    without pickle; a damaged, foreign or malformed file is a one-line :class:`KdlabError` naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError) as error:  # zip damage, object arrays (pickle), truncation
        raise KdlabError(f"{path}: not a readable predictions file ({type(error).__name__}: {error})") from None
    logits, labels = arrays.get("logits"), arrays.get("labels")
    if logits is None or labels is None or logits.ndim != 2 or labels.shape != logits.shape[:1] \
            or logits.dtype.kind != "f" or labels.dtype.kind not in "iu":
        raise KdlabError(f"{path}: a predictions file holds float logits N x K and integer labels N")
    return arrays
