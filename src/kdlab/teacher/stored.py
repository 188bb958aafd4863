"""Stored teacher views (FKD): per training image and stored view, the crop box and the teacher's top-k logits.

Shen & Xing (2022, "A Fast Knowledge Distillation Framework for Visual Recognition") store, once, for each image
the parameters of N random crops and the teacher's top-k soft labels of each, so later students distil without
running the teacher. Here the views are those of :class:`~kdlab.data.stored_views.StoredViews`; for each
(image, view) the store keeps

* ``boxes``: the crop box and flip (top, left, height, width, flip; int32), checked against the loader's boxes
  when a run opens the store,
* ``indices`` / ``values``: the k largest raw logits and their classes (values in the dtype the teacher computed
  them in, bf16 under bf16 autocast, so nothing is rounded twice; with k = K all logits in class order and no
  indices),
* ``lse``: logsumexp of all K logits (float32),
* ``filled``: which entries hold values.

A lookup rebuilds K logits: the k stored ones as they were, every other class lse + log(r / (K - k)) with r the
probability mass outside the top k (at least 1e-12). Its softmax is the teacher's softmax on the top k and spreads
the remaining mass r evenly over the rest (FKD's "marginal smoothing" of the discarded classes); with
``top_k = K`` (the default) nothing is rebuilt and a student trained from the store equals, bit for bit, one whose
teacher ran live on the same views (tested). The summary records ``exact`` accordingly.

On disk: ``<cache root>/teacher-views/<key>/`` in the teacher cache's layout (:mod:`kdlab.teacher.cache`): a
content-named safetensors file and the ``meta.json`` that names it with its size and sha256 (plus k, the classes and
the augmentation record), published in that order under the folder's ``flock`` and merged with the entries another
run stored meanwhile. A truncated, corrupted or mismatched store is reported once, deleted and rebuilt, never used;
a store whose boxes differ from the loader's is refused. Loaded with safetensors (no pickle). Memory: per image N x (k x (2 + value bytes) + 4 + 1 + 20) bytes (k < K): ImageNet with N = 10,
k = 10 in bf16 is about 0.6 GB in host memory, where a dense N x K table would be 26 GB.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdlab.errors import KdlabError
from kdlab.teacher.cache import CacheDamaged, TeacherLogitCache

MIN_REST = 1e-12


class StoredTeacherViews(TeacherLogitCache):
    """Top-``top_k`` teacher logits per (sample, stored view) with the views' ``boxes`` (num_samples x num_views x
    5), held in host memory and optionally backed by ``folder``."""

    def __init__(self, boxes: torch.Tensor, num_classes: int, dtype: torch.dtype, key: str, top_k: int | None = None,
                 folder: Path | None = None, augment: dict | None = None):
        num_samples, num_views = boxes.shape[:2]
        self.k = num_classes if top_k is None else int(top_k)
        if not 1 <= self.k <= num_classes:
            raise KdlabError(f"runtime.teacher_top_k must lie in 1..{num_classes} (the classes), got {top_k}")
        self.key, self.folder, self.num_classes, self._dtype = key, folder, num_classes, dtype
        self.augment = augment
        self.boxes = boxes.to(torch.int32).cpu()
        index_dtype = torch.int16 if num_classes <= 32767 else torch.int32
        # k = K keeps the logits in class order: no indices needed
        self.indices = torch.zeros(num_samples, num_views, 0 if self.exact else self.k, dtype=index_dtype)
        self.values = torch.zeros(num_samples, num_views, self.k, dtype=dtype)
        self.lse = torch.zeros(num_samples, num_views, dtype=torch.float32)
        self.filled = torch.zeros(num_samples, num_views, dtype=torch.bool)
        self.hits = self.misses = self._stored = 0
        self._reported: set[str] = set()
        if folder is not None:
            self._merge_from_disk()
            self._stored = int(self.filled.sum())

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def exact(self) -> bool:
        return self.k == self.num_classes

    def _put(self, sample, view, logits: torch.Tensor) -> None:
        logits = logits.detach()
        if self.exact:
            self.values[sample, view] = logits.cpu()
        else:
            values, indices = logits.topk(self.k, dim=1)
            self.values[sample, view] = values.cpu()
            self.indices[sample, view] = indices.to(self.indices.dtype).cpu()
        self.lse[sample, view] = torch.logsumexp(logits.float(), dim=1).cpu()

    def _get(self, sample, view) -> torch.Tensor:
        values = self.values[sample, view]
        if self.exact:
            return values
        indices = self.indices[sample, view].long()
        lse = self.lse[sample, view]
        rest = (1 - torch.exp(values.float() - lse[:, None]).sum(1)).clamp_min(MIN_REST)
        others = lse + torch.log(rest / (self.num_classes - self.k))
        full = others[:, None].expand(-1, self.num_classes).to(values.dtype).clone()
        return full.scatter_(1, indices, values)

    def record(self) -> dict:
        return {**super().record(), "mode": "stored", "top_k": self.k, "exact": self.exact,
                "bytes_per_image": self.bytes_per_image()}

    def bytes_per_image(self) -> int:
        """The store's size per training image (all its views), in bytes."""
        return int(sum(getattr(self, name)[0].numel() * getattr(self, name).element_size()
                       for name in self.DISK_TENSORS))

    # on disk: the folder layout, checksums and lock of kdlab.teacher.cache, with these tensors

    DISK_TENSORS = ("values", "indices", "lse", "boxes", "filled")
    LEGACY = "views.safetensors"  # format 1's data file, without a checksum

    def _disk_record(self) -> dict:
        return {"key": self.key, "shape": list(self.values.shape), "dtype": str(self.dtype),
                "classes": self.num_classes, "top_k": self.k, "augment": self.augment}

    def _absorb(self, stored: dict[str, torch.Tensor]) -> None:
        for name in self.DISK_TENSORS:
            mine, theirs = getattr(self, name), stored[name]
            if theirs.shape != mine.shape or theirs.dtype != mine.dtype:
                raise CacheDamaged(f"its {name} are {list(theirs.shape)} {theirs.dtype}, this store's key means "
                                   f"{list(mine.shape)} {mine.dtype}")
        if not torch.equal(stored["boxes"], self.boxes):
            raise KdlabError(f"{self.folder}: its stored crop boxes differ from the ones this run draws (same key); "
                             f"delete the folder to rebuild it")
        new = stored["filled"] & ~self.filled
        for name in ("indices", "values", "lse"):
            getattr(self, name)[new] = stored[name][new]
        self.filled |= stored["filled"]
