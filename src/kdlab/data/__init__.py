"""Datasets: decode a source once, cache it, and hand out uint8 NHWC splits.

``load_dataset("cifar10", "/data/cifar-10-batches-py")`` decodes the files the first time and reads the cached
arrays afterwards (see :mod:`kdlab.data.cache`); the sources and their options are in :mod:`kdlab.data.sources`.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import replace

from kdlab.data import cache
from kdlab.data.dataset import Dataset, Split
from kdlab.data.noise import LabelNoise, restore_clean_val, with_label_noise
from kdlab.data.sources import CONTENT_VERSIONS, DATA_FOLDERS, LATER_OPTIONS, LISTINGS, SOURCES
from kdlab.data.sources.common import data_folder
from kdlab.data.split import carve_validation, take_train_subset
from kdlab.errors import KdlabError

RESIDENCIES = ("auto", "device", "stream")

__all__ = ["Dataset", "LabelNoise", "Split", "SOURCES", "carve_validation", "load_dataset"]


def source_options(source: str, options: dict) -> dict:
    """``options`` checked against what ``source`` takes, with its defaults filled in (so the cache key does not
    depend on whether a default was spelled out)."""
    parameters = inspect.signature(SOURCES[source]).parameters
    accepted = {name: p for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
        raise KdlabError(f"data source {source} has no option {', '.join(unknown)} ({takes})")
    return {name: options.get(name, p.default) for name, p in accepted.items()}


def load_dataset(
    source: str,
    path: str | os.PathLike | None = None,
    *,
    val_size: int | float = 0,
    train_size: int | float = 0,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    label_noise: LabelNoise | None = None,
    residency: str = "device",
    memory_budget: int | None = None,
    **options,
) -> Dataset:
    """The dataset of ``source`` (a name in :data:`SOURCES`) read from folder ``path``, from the cache if possible.

    ``options`` go to the source (e.g. ``classes`` for idx, ``mode`` for folder). With ``val_size`` (a count, or
    a fraction in (0, 1)) a stratified validation split is carved from train with ``seed``, unless the source
    has its own. With ``train_size`` (a count or a fraction; 0: all) only a fixed stratified subset of the training
    split is kept, the same for every seed (:func:`kdlab.data.split.take_train_subset`), before anything else. With
    ``label_noise`` the training labels are corrupted (before the validation split is carved, see
    :mod:`kdlab.data.noise`). The result's ``fingerprint`` is the cache key, extended by the label-noise and
    validation-split parameters.

    ``residency``: ``device`` decodes the whole source (through the cache); ``stream`` lists its files and decodes
    nothing (the splits hold :class:`~kdlab.data.files.ImageFiles`, read batch by batch by
    :class:`~kdlab.data.stream.StreamLoader`; image-file sources only, see ``LISTINGS``); ``auto`` streams when the
    decoded splits would exceed ``memory_budget`` bytes. Both give the same fingerprints, samples and splits.
    """
    if source not in SOURCES:
        raise KdlabError(f"unknown data source {source!r}; known sources: {', '.join(SOURCES)}")
    options = source_options(source, options)
    reads_files = "path" in inspect.signature(SOURCES[source]).parameters
    root = cache.cache_root(cache_dir)
    if reads_files:
        if path is None:
            raise KdlabError(f"data source {source} needs a path (the folder holding its files)")
        folder = DATA_FOLDERS.get(source, data_folder)(path)
        key_options = {k: v for k, v in options.items() if not (v is None and k in LATER_OPTIONS.get(source, ()))}
        key = cache.source_key(source, key_options, folder=folder, skip=root)
    else:
        if path is not None:
            raise KdlabError(f"data source {source} reads no files, but a path was given: {path}")
        key = cache.source_key(source, options, version=CONTENT_VERSIONS[source]())
    if residency not in RESIDENCIES:
        raise KdlabError(f"data.residency must be one of {', '.join(RESIDENCIES)}, got {residency!r}")
    if residency == "stream" and source not in LISTINGS:
        raise KdlabError(f"data.residency: stream reads image files batch by batch; data source {source} is decoded "
                         f"whole (stream works with {', '.join(LISTINGS)}; use device or auto)")
    listed = LISTINGS[source](folder, **options) if residency != "device" and source in LISTINGS else None
    if listed is not None and residency == "auto":
        decoded = sum(s.images.decoded_bytes for s in (listed.train, listed.test, listed.val) if s is not None)
        if memory_budget is None or decoded <= memory_budget:
            listed = None  # fits: decode it whole
    dataset = cache.load_entry(root, source, key) if listed is None else replace(listed, fingerprint=key)
    if dataset is None:
        decoded = SOURCES[source](folder, **options) if reads_files else SOURCES[source](**options)
        dataset = replace(decoded, fingerprint=key)
        cache.store_entry(root, source, key, dataset)
    dataset = replace(dataset, source_fingerprint=key)
    dataset = take_train_subset(dataset, train_size)
    if label_noise is not None and label_noise.rate > 0:
        dataset = with_label_noise(dataset, label_noise)
    dataset = carve_validation(dataset, val_size, seed)
    return restore_clean_val(dataset) if label_noise is not None and label_noise.clean_val else dataset
