"""Teacher-logit cache: a teacher's logits for each (training image, augmentation view), computed once.

With discrete augmentations (crop offset x flip, :mod:`kdlab.data.augment`) an input is one of ``V`` named views
of a training image, and a frozen teacher's logits for it never change. The cache is a table ``N x V x K`` plus a
``filled`` mask: a batch looks its (sample, view) keys up, runs the teacher only on the misses, and stores them, so
after a few epochs (or after ``kdlab cache-teacher`` filled every view) distillation costs almost no teacher time.

Exactness: a hit returns the very values the teacher produced for that view (stored in the dtype the teacher
computed them in, e.g. bf16 under bf16 autocast), so a run with the cache equals the run without it up to the
teacher's own batch-composition rounding (a backend may pick another kernel for another batch size), which is zero
with ``runtime.teacher_batch`` (:class:`~kdlab.teacher.module.FixedBatch`: every forward has one shape). The cache
refuses augmentations that are not discrete (mixup, rotation, SpecAugment, ...).

Sharing: the key hashes everything the values depend on: the teacher's weights (sha256 of its safetensors file),
the decoded source (``Dataset.source_fingerprint``; samples are addressed by ``Split.source_index``, so runs with
different seeds and hence different validation splits share one cache), the augmentation (padding, padding mode,
flip), the input normalisation the teacher sees, precision and device type. On disk it lives under
``<cache root>/teacher-logits/<key>/`` as a safetensors table + mask, written atomically and merged with whatever
another run stored meanwhile; readers and writers take turns on the folder's ``flock`` (two runs filling one cache
end with the union of their entries).

Integrity: ``meta.json`` names the data file with its size and sha256 and is published after it, so a cache on disk
is absent or valid whenever a writer dies. A truncated, corrupted or mismatched cache is never used: it is reported
once on stderr ("teacher cache DIR is damaged (WHY): rebuilding it"), deleted and rebuilt from the teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from kdlab.errors import KdlabError
from kdlab.io import WriteError, atomic_write_bytes, atomic_write_json, remove_temporaries

FORMAT = 1  # of the key: changing it would orphan every cache already filled
DISK_FORMAT = 2  # of the folder: 2 adds the data file's size and sha256 to meta.json
META_FILE = "meta.json"
LOCK_FILE = ".lock"
LEGACY_FILE = "logits.safetensors"  # format 1's data file, without a checksum
DATA_FILE = re.compile(r"logits-[0-9a-f]{16}\.safetensors")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(*, teacher_weights: Path, source_fingerprint: str, augment: dict, normalisation: dict,
              precision: str, device_type: str, num_samples: int, num_classes: int,
              teacher_compiled: bool = False, features: dict | None = None,
              teacher_view: dict | None = None, teacher_batch: int | None = None,
              teacher_sha256: str | None = None) -> str:
    """The hash of everything a cached value depends on (a compiled teacher's logits differ from eager ones by
    rounding, so which of the two fills the cache is part of the key; audio inputs depend on their features).
    ``teacher_sha256``, when given, is the weights' checksum taken as they were loaded (hashing the file again
    could see another file, replaced in between, and file that teacher's logits under the wrong key)."""
    teacher = teacher_sha256 or file_sha256(teacher_weights)
    parts = {"format": FORMAT, "teacher": teacher, "source": source_fingerprint,
             "augment": augment, "normalisation": normalisation, "precision": precision, "device": device_type,
             "samples": num_samples, "classes": num_classes}
    if teacher_compiled:  # only then, so caches filled by eager teachers keep their keys
        parts["teacher_compiled"] = True
    if features is not None:  # only for audio, so image caches keep their keys
        parts["features"] = features
    if teacher_view is not None:  # only for library teachers (model, resize, class map), so run teachers keep theirs
        parts["teacher_view"] = teacher_view
    if teacher_batch is not None:  # the fixed batch the teacher ran in (its low bits depend on it)
        parts["teacher_batch"] = teacher_batch
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class TeacherLogitCache:
    """``N x V x K`` teacher logits with a filled mask, on the training device; optionally backed by a folder."""

    def __init__(self, num_samples: int, num_views: int, num_classes: int, dtype: torch.dtype,
                 device: torch.device | str, key: str, folder: Path | None = None):
        self.key = key
        self.folder = folder
        self.table = torch.zeros(num_samples, num_views, num_classes, dtype=dtype, device=device)
        self.filled = torch.zeros(num_samples, num_views, dtype=torch.bool, device=device)
        self.hits = 0
        self.misses = 0
        self._stored = 0  # entries filled when the folder was last read or written
        self._reported: set[str] = set()  # damage already reported (once each)
        if folder is not None:
            self._merge_from_disk()
            self._stored = int(self.filled.sum())

    @property
    def coverage(self) -> float:
        """Fraction of all (sample, view) pairs filled."""
        return float(self.filled.float().mean())

    def logits(self, teacher, inputs: torch.Tensor, keys: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The teacher's logits for ``inputs`` whose (sample, view) are ``keys``: cached ones looked up, the rest
        computed with ``teacher`` (called on the missing inputs only) and stored."""
        sample, view = (k.to(self.filled.device) for k in keys)
        known = self.filled[sample, view]
        missing = (~known).nonzero().squeeze(1)
        n_missing = int(missing.numel())
        if n_missing:
            computed = teacher(inputs[missing.to(inputs.device)])
            if computed.dtype != self.dtype:
                raise KdlabError(f"teacher cache holds {self.dtype} logits but the teacher gave {computed.dtype}")
            self._put(sample[missing], view[missing], computed)
            self.filled[sample[missing], view[missing]] = True
        self.misses += n_missing
        self.hits += int(sample.numel()) - n_missing
        return self._get(sample, view).to(inputs.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.table.dtype

    def _put(self, sample: torch.Tensor, view: torch.Tensor, logits: torch.Tensor) -> None:
        self.table[sample, view] = logits

    def _get(self, sample: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return self.table[sample, view]

    def missing(self, samples: torch.Tensor) -> int:
        """How many (sample, view) pairs of ``samples`` (source indices) are not filled yet."""
        return int((~self.filled[samples.to(self.filled.device)]).sum())

    def record(self) -> dict:
        """The cache's mode, key, hits, misses and coverage for the run's summary."""
        return {"mode": "disk" if self.folder is not None else "memory", "key": self.key, "hits": self.hits,
                "misses": self.misses, "coverage": self.coverage}

    def fill(self, teacher, loader, views: torch.Tensor | None = None, progress=None) -> None:
        """Compute every view (or the view indices ``views``) of every sample of ``loader``'s split: the
        ``kdlab cache-teacher`` path. ``progress`` is called with the number of logits computed by each batch."""
        augment = loader.augment
        all_views = torch.arange(self.filled.shape[1]) if views is None else views
        for v in all_views.tolist():
            for start in range(0, loader.num_samples, loader.batch_size):
                index = torch.arange(start, min(start + loader.batch_size, loader.num_samples), device=loader.device)
                sample = loader.source_index[index]
                view = torch.full_like(index, v)
                if bool(self.filled[sample.to(self.filled.device), view.to(self.filled.device)].all()):
                    continue
                views_of = augment.views_of(view, sample) if augment is not None else None
                before = self.misses
                with torch.autocast(loader.device.type, enabled=False):  # inputs as training makes them
                    inputs = loader.inputs(loader.images[index], views_of)
                self.logits(teacher, inputs, (sample, view))
                if progress is not None:
                    progress(self.misses - before)


    # ---------------------------------------------------------------------------------------------- disk

    def save(self) -> bool:
        """Write the cache to its folder if it gained entries since the last read or write, merged (under the
        folder's lock) with the entries other runs stored meanwhile. Returns whether it wrote; a write that fails
        (a full disk, a read-only folder) raises :class:`~kdlab.io.WriteError` and leaves the previous cache."""
        if self.folder is None or int(self.filled.sum()) == self._stored:
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WriteError(f"cannot create the teacher cache folder {self.folder}: {error.strerror or error}") \
                from None
        with folder_lock(self.folder):
            self._merge_locked()
            tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in self.DISK_TENSORS}
            write_cache(self.folder, tensors, self._disk_record())
        self._stored = int(self.filled.sum())
        return True

    # What a subclass with other tensors changes: the attributes written (each indexed by (sample, view); the first
    # is the one meta.json's shape and dtype describe, ``filled`` is among them), the record beside them, how stored
    # entries join the ones in memory, and the data file of the format before checksums.
    DISK_TENSORS = ("table", "filled")
    LEGACY = LEGACY_FILE

    def _disk_record(self) -> dict:
        return {"key": self.key, "shape": list(self.table.shape), "dtype": str(self.table.dtype)}

    def _absorb(self, stored: dict[str, torch.Tensor]) -> None:
        """Add the ``stored`` entries (checked against the folder's meta.json) that memory lacks; raise
        :class:`CacheDamaged` when they cannot belong to this cache."""
        table, filled = stored["table"], stored["filled"]
        if table.shape != self.table.shape or table.dtype != self.table.dtype:
            raise CacheDamaged(f"it holds a {list(table.shape)} {table.dtype} table, this teacher's key means "
                               f"{list(self.table.shape)} {self.table.dtype}")
        table, filled = table.to(self.table.device), filled.to(self.filled.device)
        new = filled & ~self.filled
        self.table[new] = table[new]
        self.filled |= filled

    def _merge_from_disk(self) -> None:
        if (self.folder / META_FILE).exists() or (self.folder / self.LEGACY).exists():
            with folder_lock(self.folder):
                self._merge_locked()

    def _merge_locked(self) -> None:
        """Add the entries stored in the folder (the caller holds its lock); a damaged cache is reported, deleted
        and rebuilt from the teacher."""
        try:
            found = read_cache(self.folder, self.DISK_TENSORS, legacy=self.LEGACY)
            if found is None:
                return
            meta, stored = found
            if meta["key"] != self.key:
                raise CacheDamaged(f"meta.json holds the key {str(meta['key'])[:12]}..., not its folder's")
            self._absorb(stored)
        except CacheDamaged as damage:
            self._discard(str(damage))

    def _discard(self, why: str) -> None:
        """Report a damaged cache once (one line on stderr) and delete its files, so it is rebuilt, never used."""
        if why not in self._reported:
            self._reported.add(why)
            print(f"kdlab: warning: teacher cache {self.folder} is damaged ({why}): rebuilding it", file=sys.stderr)
        remove_cache_files(self.folder, legacy=self.LEGACY)


# -------------------------------------------------------------------------------------------------- the folder
#
# <folder>/meta.json                     {"format": 2, "key", "shape", "dtype", "filled", "file", "bytes", "sha256"}
# <folder>/logits-<sha256[:16]>.safetensors   the table and the filled mask; named by its content, never rewritten
# <folder>/.lock                         flock'ed by whoever reads or writes the folder
#
# meta.json is the pointer, written (atomically) after the data file it names, and it carries that file's size and
# sha256: a reader checks both before it trusts a byte. A writer killed before its meta.json lands leaves the
# previous pointer and the previous data file intact (plus an unpublished file the next writer deletes), so a cache
# is always absent or valid; truncation, flipped bytes, a missing file and a meta.json that does not describe its
# data are all detected.


class CacheDamaged(Exception):
    """The files of a cache folder do not make a valid cache; the message says why, in a few words."""


@contextmanager
def folder_lock(folder: Path):
    """Hold an exclusive ``fcntl.flock`` on ``folder/.lock`` while reading or writing the cache in ``folder``: a
    reader never meets a write half done, and two writers merge one after the other instead of the second dropping
    the first one's entries. The kernel releases a flock when its holder dies (kill -9 included), so it never stays
    stuck. Without the lock file (a read-only folder) or flock support (some network file systems) the block runs
    unlocked: reading stays safe (files are published by rename, never changed in place), writing fails anyway."""
    try:
        import fcntl

        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


def read_cache(folder: Path, names: tuple[str, ...] = ("table", "filled"), legacy: str = LEGACY_FILE
               ) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The meta record and the checked tensors ``names`` (on the CPU; the first one is what meta.json's shape and
    dtype describe, ``filled`` its mask) of the cache in ``folder``; None when it holds none; :class:`CacheDamaged`
    when its files do not make a valid cache. Hold :func:`folder_lock` around it."""
    try:
        text = (folder / META_FILE).read_text()
    except FileNotFoundError:
        if (folder / legacy).is_file():
            raise CacheDamaged(f"{legacy} has no meta.json") from None
        return None  # nothing yet, or the data file of a writer killed before its meta.json
    except (OSError, UnicodeDecodeError) as error:
        raise CacheDamaged(f"meta.json is unreadable: {error}") from None
    try:
        meta = json.loads(text)
    except ValueError:
        raise CacheDamaged("meta.json is not valid JSON") from None
    if not isinstance(meta, dict):
        raise CacheDamaged("meta.json is not a JSON object")
    if meta.get("format") != DISK_FORMAT:
        raise CacheDamaged(f"format {meta.get('format')!r} without checksums, written by an older kdlab")
    name, size, digest = meta.get("file"), meta.get("bytes"), meta.get("sha256")
    if not (isinstance(name, str) and DATA_FILE.fullmatch(name) and isinstance(size, int) and isinstance(digest, str)
            and "key" in meta):
        raise CacheDamaged("meta.json does not name a data file with its size and checksum")
    path = folder / name
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise CacheDamaged(f"its data file {name} is missing") from None
    if actual != size:
        raise CacheDamaged(f"{name} has {actual} bytes, meta.json says {size}")
    if file_sha256(path) != digest:
        raise CacheDamaged(f"{name} fails its sha256 checksum")
    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CacheDamaged(f"{name} is not a safetensors file: {error}") from None
    if any(n not in stored for n in names):
        raise CacheDamaged(f"{name} lacks one of its tensors ({', '.join(n for n in names if n not in stored)})")
    main, filled = stored[names[0]], stored["filled"]
    if (list(main.shape) != meta.get("shape") or str(main.dtype) != meta.get("dtype") or filled.dtype != torch.bool
            or filled.dim() != 2 or any(stored[n].shape[:2] != filled.shape for n in names)
            or int(filled.sum()) != meta.get("filled")):
        raise CacheDamaged(f"{name} holds other tensors than meta.json describes")
    return meta, {n: stored[n] for n in names}


def write_cache(folder: Path, tensors: dict[str, torch.Tensor], record: dict) -> None:
    """Publish ``tensors`` (``filled`` among them) as the cache of ``folder``: the data file first, then the
    meta.json naming it (with ``record``: key, shape, dtype, ...), then the files it replaces go. Hold
    :func:`folder_lock` around it."""
    data = save(tensors)
    digest = hashlib.sha256(data).hexdigest()
    name = f"logits-{digest[:16]}.safetensors"
    atomic_write_bytes(folder / name, data)
    atomic_write_json(folder / META_FILE, {"format": DISK_FORMAT, **record, "filled": int(tensors["filled"].sum()),
                                          "file": name, "bytes": len(data), "sha256": digest})
    remove_cache_files(folder, keep=name)


def remove_cache_files(folder: Path, keep: str | None = None, legacy: str = LEGACY_FILE) -> None:
    """Delete the cache files of ``folder`` (its meta.json too unless ``keep`` names the published data file; the
    unchecked data file ``legacy`` of the format before checksums), and the temporary files of killed writes; the
    lock file stays."""
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    for name in names:
        if name == keep or name == LOCK_FILE:
            continue
        if DATA_FILE.fullmatch(name) or name == legacy or (keep is None and name == META_FILE):
            (folder / name).unlink(missing_ok=True)
    if folder.is_dir():
        remove_temporaries(folder)


def check_folder(folder: Path) -> str | None:
    """Why the teacher cache in ``folder`` is not valid, or None when it is valid or absent (for tests and tools;
    it changes nothing but creating the folder's lock file)."""
    with folder_lock(folder) if folder.is_dir() else nullcontext():
        try:
            read_cache(folder)
        except CacheDamaged as damage:
            return str(damage)
    return None
