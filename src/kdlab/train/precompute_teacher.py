"""``kdlab cache-teacher``: fill a recipe's on-disk teacher-logit cache for every view of every training image
before any run trains, so every run of that teacher, data and augmentation starts warm."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from kdlab.errors import KdlabError
from kdlab.teacher.cache import TeacherLogitCache
from kdlab.train.engine import prepare


def precompute(recipe, quiet: bool = False) -> TeacherLogitCache:
    """Fill and save the on-disk cache of ``recipe``'s teacher for every view of every training image."""
    if recipe.runtime.teacher_cache in ("off", "memory"):
        raise KdlabError(f"runtime.teacher_cache is {recipe.runtime.teacher_cache}: precomputing needs the disk cache")
    prepared = prepare(recipe)
    teacher = prepared.teachers.primary
    if teacher is None:
        raise KdlabError(f"method {recipe.method.name} has no teacher, so there is nothing to cache")
    cache = teacher.cache
    if cache is None or cache.folder is None:
        raise KdlabError("this recipe gets no disk teacher cache (non-discrete augmentation, or too large for "
                         "teacher_cache: auto; set runtime.teacher_cache=disk)")
    loader = prepared.train_loader
    missing = cache.missing(loader.source_index)
    bar = tqdm(total=missing, unit="img", desc="teacher logits", disable=quiet or not missing, file=sys.stderr,
               dynamic_ncols=True)
    with torch.inference_mode(), prepared.runtime.autocast():
        cache.fill(teacher.graph, loader, progress=bar.update)
    bar.close()
    cache.save()
    return cache
