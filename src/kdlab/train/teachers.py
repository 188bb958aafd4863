"""``TeacherFactory``: how a run builds its teachers, handed to methods as ``MethodContext.load_teacher``.

The engine makes one factory per run from what only the engine knows (the runtime, the student's data and
normalisation, the training loader's augmentation views, the ranks of a data-parallel run); a method calls
``context.load_teacher(run_dir, checkpoint)`` and gets a ready :class:`~kdlab.teacher.module.Teacher`: checked
against the student's task, re-normalised, compiled where ``runtime.compile`` asks, with a logit cache where
``runtime.teacher_cache`` and the augmentation allow. The factory remembers every teacher it built, so the engine
saves their caches, reports them and evaluates the student's fidelity to the first one without asking the method.
"""

from __future__ import annotations

import sys

from pathlib import Path

import torch

from kdlab.config import Recipe
from kdlab.data import Dataset
from kdlab.train.inputs import features_record
from kdlab.errors import KdlabError
from kdlab.io import WriteError
from kdlab.teacher.cache import TeacherLogitCache, cache_key
from kdlab.teacher.compiled import should_compile_frozen
from kdlab.teacher.module import FixedBatch, Teacher
from kdlab.teacher.library import library_teacher
from kdlab.teacher.run import WEIGHTS, load_network
from kdlab.teacher.spec import LibraryTeacherSpec

AUTO_CACHE_LIMIT_BYTES = 4 << 30  # teacher_cache: auto stays off above this table size


class TeacherFactory:
    """Builds the teachers of one run (see the module docstring); ``teachers`` lists them in the order built."""

    def __init__(self, recipe: Recipe, runtime, dataset: Dataset, train_loader, distributed=None):
        self.recipe, self.runtime, self.dataset = recipe, runtime, dataset
        self.train_loader, self.distributed = train_loader, distributed
        self.teachers: list[Teacher] = []

    def __call__(self, spec: str | Path | LibraryTeacherSpec, checkpoint: str = "final") -> Teacher:
        """The teacher of ``spec``: a run directory (its ``checkpoint`` weights) or a library model."""
        data = self.recipe.data
        compiled = should_compile_frozen(self.runtime.compile_setting, len(self.dataset.train.labels))
        name = "teacher" if not self.teachers else f"teacher{len(self.teachers) + 1}"
        if isinstance(spec, LibraryTeacherSpec):
            teacher = library_teacher(spec, self.dataset, input_mean=data.mean, input_std=data.std, compile=compiled,
                                      name=name)
            weights = Path(spec.weights) if spec.weights else None
            if weights is not None and weights.is_dir():
                from kdlab.models.libraries.hf_models import weights_file

                weights = Path(weights_file(str(weights)))
            statistics, extra = [teacher.record["mean"], teacher.record["std"]], teacher.record
        else:
            network, teacher_recipe, digest = load_network(spec, self.dataset, checkpoint,
                                                           features=features_record(data, self.dataset))
            renormalise = (data.mean, data.std, teacher_recipe.data.mean, teacher_recipe.data.std)
            # what the student distils from, as loaded now: a teacher changed or deleted later is not this one
            teacher = Teacher(network, renormalise=renormalise, compile=compiled, name=name,
                              record={"run": str(spec), "checkpoint": checkpoint, "weights_sha256": digest})
            weights = Path(spec) / "checkpoint" / WEIGHTS[checkpoint]
            statistics, extra = [teacher_recipe.data.mean, teacher_recipe.data.std], None
        if self.recipe.runtime.teacher_batch is not None:
            teacher.graph = FixedBatch(teacher.graph, self.recipe.runtime.teacher_batch)
        digest = teacher.record.get("weights_sha256")
        teacher.cache = self._cache(weights, statistics, compiled, extra, digest) if weights is not None else None
        self.teachers.append(teacher)
        return teacher

    def _cache(self, weights: Path, teacher_statistics: list, compiled: bool,
               teacher_view: dict | None = None, weights_sha256: str | None = None) -> TeacherLogitCache | None:
        """A teacher-logit cache (:mod:`kdlab.teacher.cache`) as ``runtime.teacher_cache`` asks, or None
        (data-parallel: each rank holds its own in memory, and rank 0 alone reads and writes the disk cache)."""
        recipe, runtime, dataset, loader = self.recipe, self.runtime, self.dataset, self.train_loader
        mode = recipe.runtime.teacher_cache
        if mode == "off":
            return None
        if not loader.discrete_views:
            if mode == "auto":
                return None
            raise KdlabError(f"runtime.teacher_cache: {mode} needs a discrete augmentation (crop x flip); "
                             f"{type(loader.augment).__name__} is not")
        from kdlab.data.cache import cache_root

        samples = int(dataset.train.source_index.max()) + 1
        augment = loader.augment
        key = cache_key(
            teacher_weights=weights, teacher_sha256=weights_sha256, source_fingerprint=dataset.source_fingerprint,
            augment=augment.record() if augment else None,
            normalisation={"student": [recipe.data.mean, recipe.data.std], "teacher": teacher_statistics},
            precision=runtime.precision, device_type=runtime.device.type, teacher_compiled=compiled,
            num_samples=samples, num_classes=len(dataset.classes), features=features_record(recipe.data, dataset),
            teacher_view=teacher_view, teacher_batch=recipe.runtime.teacher_batch,
        )
        bf16 = runtime.precision == "bf16"
        dtype = torch.bfloat16 if bf16 else torch.float32
        main = self.distributed is None or self.distributed.is_main
        if mode == "stored":
            return self._stored_views(key, samples, dtype, main)
        folder = cache_root(recipe.data.cache_dir) / "teacher-logits" / key if mode in ("auto", "disk") else None
        table_bytes = samples * loader.num_views * len(dataset.classes) * (2 if bf16 else 4)
        if mode == "auto" and table_bytes > AUTO_CACHE_LIMIT_BYTES:
            return None  # too large to hold by default; ask for it explicitly with disk or memory
        return TeacherLogitCache(num_samples=samples, num_views=loader.num_views, num_classes=len(dataset.classes),
                                 dtype=dtype, device=runtime.device, key=key, folder=folder if main else None)

    def _stored_views(self, key: str, samples: int, dtype: torch.dtype, main: bool):
        """The FKD store of the stored views (:mod:`kdlab.teacher.stored`), on disk under teacher-views/."""
        import hashlib

        from kdlab.data.cache import cache_root
        from kdlab.teacher.stored import StoredTeacherViews

        augment, top_k = self.train_loader.augment, self.recipe.runtime.teacher_top_k  # StoredViews (the recipe checks)
        key = hashlib.sha256(f"{key}:top_k={top_k}".encode()).hexdigest()
        folder = cache_root(self.recipe.data.cache_dir) / "teacher-views" / key
        boxes = augment.table(samples, tuple(self.train_loader.images.shape[1:3]))
        return StoredTeacherViews(boxes, len(self.dataset.classes), dtype, key, top_k=top_k,
                                  folder=folder if main else None, augment=augment.record())

    # ------------------------------------------------------------------------------------ what the engine asks

    @property
    def primary(self) -> Teacher | None:
        """The first teacher built (the one the student's fidelity is measured against), or None."""
        return self.teachers[0] if self.teachers else None

    @property
    def wants_keys(self) -> bool:
        """Whether a teacher has a cache, so training batches should carry their (sample, view) keys."""
        return any(t.cache is not None for t in self.teachers)

    def save_caches(self) -> None:
        """Write every teacher's cache; a cache that cannot be written is a one-line warning (it only saves time)."""
        for teacher in self.teachers:
            if teacher.cache is None:
                continue
            try:
                teacher.cache.save()
            except WriteError as error:
                print(f"kdlab: warning: teacher-logit cache not saved: {error}", file=sys.stderr, flush=True)

    def cache_record(self) -> dict | None:
        """The first teacher's cache record for the summary (``teacher_cache``), or None."""
        return self.primary.cache_record() if self.primary is not None else None

    def records(self) -> dict[str, dict]:
        """What each library teacher is (model, input size, interpolation, statistics, class map), by name; run
        teachers are described by their run directory and have none."""
        return {t.name: t.record for t in self.teachers if t.record}

    def states(self) -> dict[str, str]:
        """How each teacher runs, by name (``frozen_networks`` in the summary)."""
        return {t.name: t.state for t in self.teachers}
