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
another run stored meanwhile.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json
from kdlab.store.checkpoint import save_tensors

FORMAT = 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(*, teacher_weights: Path, source_fingerprint: str, augment: dict, normalisation: dict,
              precision: str, device_type: str, num_samples: int, num_classes: int,
              teacher_compiled: bool = False, features: dict | None = None,
              teacher_view: dict | None = None, teacher_batch: int | None = None) -> str:
    """The hash of everything a cached value depends on (a compiled teacher's logits differ from eager ones by
    rounding, so which of the two fills the cache is part of the key; audio inputs depend on their features)."""
    parts = {"format": FORMAT, "teacher": file_sha256(teacher_weights), "source": source_fingerprint,
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
        """Write the cache to its folder if it gained entries since the last read or write; merges entries another
        run stored meanwhile. Returns whether it wrote."""
        if self.folder is None or int(self.filled.sum()) == self._stored:
            return False
        self._merge_from_disk()
        self.folder.mkdir(parents=True, exist_ok=True)
        save_tensors(self.folder / "logits.safetensors", {"table": self.table, "filled": self.filled})
        atomic_write_json(self.folder / "meta.json", {"format": FORMAT, "key": self.key,
                                                     "shape": list(self.table.shape), "dtype": str(self.table.dtype),
                                                     "filled": int(self.filled.sum())})
        self._stored = int(self.filled.sum())
        return True

    def _merge_from_disk(self) -> None:
        file = self.folder / "logits.safetensors"
        if not file.is_file():
            return
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
            stored = load_file(str(file), device=str(self.table.device))
            table, filled = stored["table"], stored["filled"]
        except (OSError, ValueError, KeyError, RuntimeError):
            return  # unreadable or half-replaced by another writer: start from what is in memory
        if meta.get("key") != self.key or table.shape != self.table.shape or table.dtype != self.table.dtype:
            return
        new = filled & ~self.filled
        self.table[new] = table[new]
        self.filled |= filled
