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

On disk: ``<cache root>/teacher-views/<key>/views.safetensors`` + ``meta.json`` (format, key, shape, k, dtype, the
augmentation record), written atomically and merged with entries another run stored meanwhile. Loaded with
safetensors (no pickle). Memory: per image N x (k x (2 + value bytes) + 4 + 1 + 20) bytes (k < K): ImageNet with N = 10,
k = 10 in bf16 is about 0.6 GB in host memory, where a dense N x K table would be 26 GB.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json
from kdlab.store.checkpoint import save_tensors
from kdlab.teacher.cache import TeacherLogitCache

FORMAT = 1
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
        tensors = (self.boxes, self.indices, self.values, self.lse, self.filled)
        return int(sum(t[0].numel() * t.element_size() for t in tensors))

    def save(self) -> bool:
        if self.folder is None or int(self.filled.sum()) == self._stored:
            return False
        self._merge_from_disk()
        self.folder.mkdir(parents=True, exist_ok=True)
        save_tensors(self.folder / "views.safetensors", {"boxes": self.boxes, "indices": self.indices,
                                                         "values": self.values, "lse": self.lse,
                                                         "filled": self.filled})
        atomic_write_json(self.folder / "meta.json", {
            "format": FORMAT, "key": self.key, "shape": list(self.filled.shape), "classes": self.num_classes,
            "top_k": self.k, "dtype": str(self.dtype), "augment": self.augment, "filled": int(self.filled.sum())})
        self._stored = int(self.filled.sum())
        return True

    def _merge_from_disk(self) -> None:
        file = self.folder / "views.safetensors"
        if not file.is_file():
            return
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
            stored = load_file(str(file))
        except (OSError, ValueError, KeyError, RuntimeError):
            return  # unreadable or half-replaced by another writer: start from what is in memory
        if meta.get("key") != self.key or meta.get("format") != FORMAT:
            return
        if stored["boxes"].shape != self.boxes.shape or not torch.equal(stored["boxes"], self.boxes):
            raise KdlabError(f"{file}: its stored crop boxes differ from the ones this run draws (same key); "
                             f"delete the folder to rebuild it")
        filled = stored["filled"]
        new = filled & ~self.filled
        for name in ("indices", "values", "lse"):
            getattr(self, name)[new] = stored[name][new]
        self.filled |= filled
