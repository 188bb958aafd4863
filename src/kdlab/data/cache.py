"""The decoded-data cache: each source is decoded once and kept as ``.npy`` arrays plus a JSON file.

Where: ``cache_dir`` if given, else ``$KDLAB_CACHE_DIR``, else ``~/.cache/kdlab``. An entry is the folder
``<root>/<source>-<key>`` holding ``meta.json`` and ``{train,test,val}-{images,labels}.npy`` (uint8 images or
int16 waveforms; and ``{split}-groups.npy`` for audio cut into segments).

The key is the sha256 of the source name, its options (defaults filled in), the data folder's name, and for every
file under the data folder its relative path, size and modification time in ns; the files are listed with
``os.scandir`` and never read, so keying 60,000 files takes a fraction of a second. Editing, adding or removing
a file changes the key. A source with no files (digits) is keyed by what its data come from instead (the
scikit-learn version).

Safety: an entry is written into a temporary folder ``<root>/.tmp-...`` and renamed into place in one
``os.rename``, so a writer killed half-way leaves only a temporary folder, which is never read (and is removed
once it is an hour old). ``meta.json`` records each array's shape and CRC-32; an entry whose files are missing,
truncated or do not match is reported with a warning, ignored and rebuilt.

Arrays are memory-mapped copy-on-write (``np.load(mmap_mode="c")``): for a full read (the CRC check reads every
byte) that measured 2-6x faster than a plain ``np.load`` (no fresh allocation to fault in), the pages are shared
with the OS file cache, and the arrays are still writable (changes stay private to the process). kdlab never
modifies an entry's files in place, only replaces whole entries by rename, so a mapped file never shrinks under a
reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
import zlib
from pathlib import Path

import numpy as np

from kdlab.data.dataset import Dataset, Split
from kdlab.errors import KdlabError

CACHE_FORMAT = 2
CACHE_DIR_ENV = "KDLAB_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/kdlab"
META_FILE = "meta.json"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
STALE_SECONDS = 3600
SPLIT_NAMES = ("train", "test", "val")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$KDLAB_CACHE_DIR``, else ``~/.cache/kdlab`` (absolute)."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return Path(os.path.abspath(os.path.expanduser(os.fspath(chosen))))


def scan_files(folder: Path, skip: Path | None = None) -> list[str]:
    """One record ``"<relative path>\\0<size>\\0<mtime_ns>\\0"`` per file under ``folder``, sorted by path; ``skip``
    (a folder, e.g. a cache inside the data folder) is left out. Symlinks are followed; a folder reached twice (a
    symlink loop) is listed once. Nothing is opened: one ``stat`` per file."""
    skip_real = os.path.realpath(skip) if skip is not None else None
    records: list[str] = []
    root_stat = folder.stat()
    seen = {(root_stat.st_dev, root_stat.st_ino)}
    pending = [(os.fspath(folder), "")]
    while pending:
        path, prefix = pending.pop()
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        stat = entry.stat()
                        if entry.is_dir():
                            if (stat.st_dev, stat.st_ino) in seen or os.path.realpath(entry.path) == skip_real:
                                continue
                            seen.add((stat.st_dev, stat.st_ino))
                            pending.append((entry.path, f"{prefix}{entry.name}/"))
                        else:
                            records.append(f"{prefix}{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0")
                    except FileNotFoundError:  # a dangling symlink, or a file removed while listing
                        continue
        except OSError as error:
            raise KdlabError(f"{path}: cannot list the data folder: {error.strerror or error}") from None
    records.sort()
    return records


def source_key(source: str, options: dict, *, folder: Path | None = None, version: str | None = None,
               skip: Path | None = None) -> str:
    """The cache key (sha256 hex) of ``source`` with ``options``, over the files under ``folder`` (if any) and the
    content ``version`` (for sources with no files)."""
    header = {"cache_format": CACHE_FORMAT, "source": source, "options": options,
              "folder_name": folder.name if folder is not None else None, "version": version}
    try:
        text = json.dumps(header, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise KdlabError(f"options of data source {source} must be plain values (strings, numbers, lists), "
                         f"got {options!r}") from None
    digest = hashlib.sha256(text.encode())
    if folder is not None:
        # surrogateescape: file names that are not valid UTF-8 hash as their raw bytes
        digest.update("".join(scan_files(folder, skip)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def entry_path(root: Path, source: str, key: str) -> Path:
    return root / f"{source}-{key}"


def crc32(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).data)


def write_entry(folder: Path, key: str, dataset: Dataset) -> None:
    """Write ``dataset``'s arrays and ``meta.json`` (last) into the empty folder ``folder``."""
    splits = {}
    for name in SPLIT_NAMES:
        split = getattr(dataset, name)
        if split is None:
            continue
        for part in ("images", "labels", "groups"):
            array = getattr(split, part)
            if array is None:
                continue
            np.save(folder / f"{name}-{part}.npy", array, allow_pickle=False)
            splits.setdefault(name, {})[part] = {"shape": list(array.shape), "crc32": crc32(array)}
    meta = {"cache_format": CACHE_FORMAT, "key": key, "name": dataset.name, "classes": list(dataset.classes),
            "sample_rate": dataset.sample_rate, "splits": splits, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")


def read_entry(folder: Path, key: str) -> Dataset:
    """The dataset stored in entry ``folder``; ValueError (or OSError) if anything in it does not match."""
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("cache_format") != CACHE_FORMAT or meta.get("key") != key:
        raise ValueError("meta.json belongs to another key or cache format")
    sample_rate = int(meta["sample_rate"])
    splits = {}
    for name, parts in meta["splits"].items():
        arrays = {}
        dtypes = {"images": np.int16 if sample_rate else np.uint8, "labels": np.int64, "groups": np.int64}
        for part, dtype in dtypes.items():
            if part == "groups" and part not in parts:
                continue
            array = np.asarray(np.load(folder / f"{name}-{part}.npy", mmap_mode="c", allow_pickle=False))
            expected = parts[part]
            if array.dtype != dtype or list(array.shape) != expected["shape"] or crc32(array) != expected["crc32"]:
                raise ValueError(f"{name}-{part}.npy does not match meta.json")
            arrays[part] = array
        splits[name] = Split(arrays["images"], arrays["labels"], groups=arrays.get("groups"))
    return Dataset(name=meta["name"], classes=list(meta["classes"]), train=splits["train"], test=splits["test"],
                   val=splits.get("val"), fingerprint=key, sample_rate=sample_rate)


def load_entry(root: Path, source: str, key: str) -> Dataset | None:
    """The cached dataset for ``key``, or None if there is none or it is damaged (with a warning)."""
    folder = entry_path(root, source, key)
    if not folder.is_dir():
        return None
    try:
        return read_entry(folder, key)
    except Exception as error:  # any damage (missing file, bad JSON, truncated array, wrong CRC) means "rebuild"
        warnings.warn(f"ignoring damaged data cache entry {folder} ({type(error).__name__}: {error}); "
                      f"decoding the data again", stacklevel=2)
        return None


def discard(folder: Path) -> None:
    """Remove ``folder`` by first renaming it out of the way, so nobody reads it half-deleted."""
    trash = folder.with_name(f"{TRASH_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def remove_stale(root: Path) -> None:
    """Remove temporary and trash folders left by writers that died more than an hour ago."""
    now = time.time()
    for entry in os.scandir(root):
        if entry.name.startswith((TEMP_PREFIX, TRASH_PREFIX)):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                continue


def store_entry(root: Path, source: str, key: str, dataset: Dataset) -> None:
    """Write ``dataset`` as the entry for ``key``, atomically; an existing (damaged) entry is replaced.

    A cache that cannot be written is a warning, not an error: the data are already decoded in memory.
    """
    final = entry_path(root, source, key)
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale(root)
        temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{final.name}-", dir=root))
        os.chmod(temp, 0o755)  # mkdtemp makes it private; a published entry is as readable as its files
    except OSError as error:
        warnings.warn(f"cannot write the data cache in {root} ({error}); set {CACHE_DIR_ENV} to a writable folder",
                      stacklevel=2)
        return
    try:
        write_entry(temp, key, dataset)
        if final.exists():
            discard(final)
        try:
            os.rename(temp, final)
        except OSError:
            if not final.is_dir():  # else another process published the same entry first: keep theirs
                raise
    except OSError as error:
        warnings.warn(f"cannot write the data cache entry {final} ({error})", stacklevel=2)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
