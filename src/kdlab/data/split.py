"""Seeded stratified splits: a validation split carved from train, a training subset (low-data regimes), and the
split of sources with no official one.

Both use ``sklearn.model_selection.train_test_split(stratify=labels, random_state=seed)`` on sample indices, so
each class keeps its share in both parts and the same seed always gives the same split. Both parts keep the
original sample order.
"""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import replace

import numpy as np

from kdlab.data.dataset import Dataset, Split
from kdlab.errors import KdlabError


def stratified_split(labels: np.ndarray, count: int, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices (kept, taken): ``count`` samples taken in proportion to each class's frequency."""
    from sklearn.model_selection import train_test_split  # imported here: scikit-learn takes a second to import

    try:
        kept, taken = train_test_split(np.arange(len(labels)), test_size=count, stratify=labels, random_state=seed)
    except ValueError as error:
        raise KdlabError(f"{where}: cannot take a stratified split of {count} of {len(labels)} samples: "
                         f"{error}") from None
    return np.sort(kept), np.sort(taken)


def validation_count(size: int | float, total: int, where: str, name: str = "val_size", all_ok: bool = False) -> int:
    """``size`` (a count, or a fraction in (0, 1) of ``total``) as a number of samples; 0 means none. ``name`` is
    the option in messages; ``all_ok`` allows a count of all ``total`` samples."""
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise KdlabError(f"{where}: {name} must be a count or a fraction in (0, 1), got {size!r}")
    if isinstance(size, numbers.Integral) or (size >= 1 and float(size).is_integer()):
        count = int(size)
    elif 0 < size < 1:
        count = int(round(size * total))
        if count == 0:
            raise KdlabError(f"{where}: {name} {size} of {total} training samples is less than one sample")
    elif size == 0:
        count = 0
    else:
        raise KdlabError(f"{where}: {name} must be a count or a fraction in (0, 1), got {size!r}")
    if count < 0:
        raise KdlabError(f"{where}: {name} must not be negative, got {size!r}")
    if count > total or (count == total and not all_ok):
        raise KdlabError(f"{where}: {name} {size!r} asks for {count} of only {total} training samples")
    return count


def carve_validation(dataset: Dataset, size: int | float, seed: int) -> Dataset:
    """Move ``size`` training samples (a count, or a fraction in (0, 1)) to a new validation split.

    The split is stratified by label and a pure function of (train labels, count, seed). Samples cut from one
    recording (``Split.groups``) move together: the split then takes whole groups, stratified by their labels, as
    many as the count's share of the groups. A dataset that already
    has a validation split (e.g. CINIC-10's ``valid/``) is returned unchanged, and so is any dataset for
    ``size == 0``. The fingerprint of the result extends the dataset's with the count and the seed.
    """
    if dataset.val is not None:
        return dataset
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise KdlabError(f"{dataset.name}: the validation split seed must be a whole number in [0, 2**32), "
                         f"got {seed!r}")
    count = validation_count(size, len(dataset.train), dataset.name)
    if count == 0:
        return dataset
    train = dataset.train
    if train.groups is None:
        kept, taken = stratified_split(train.labels, count, int(seed), f"{dataset.name} train")
    else:
        kept, taken = _grouped_split(train, count, int(seed), f"{dataset.name} train")
    fingerprint = hashlib.sha256(f"{dataset.fingerprint}|val={count}|seed={int(seed)}".encode()).hexdigest()
    return replace(
        dataset,
        train=train.take(kept),
        val=train.take(taken),
        fingerprint=fingerprint,
    )


def _grouped_split(split: Split, count: int, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted sample indices (kept, taken) taking whole groups: round(count * groups / samples) of them, stratified
    by each group's label (a group's samples share one label)."""
    groups, first = np.unique(split.groups, return_index=True)
    group_labels = split.labels[first]
    take = max(1, int(round(count * len(groups) / len(split))))
    if take >= len(groups):
        raise KdlabError(f"{where}: val_size {count} would take every one of the {len(groups)} recordings")
    _, taken_groups = stratified_split(group_labels, take, seed, where)
    in_val = np.isin(split.groups, groups[taken_groups])
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


SUBSET_SEED = 0  # the training subset is the same in every run, whatever its seed, so runs pair by seed


def take_train_subset(dataset: Dataset, size: int | float) -> Dataset:
    """Keep ``size`` training samples (a count, or a fraction in (0, 1)), stratified by label, drawn with the fixed
    seed :data:`SUBSET_SEED` (whole recordings for segmented audio); ``size == 0`` keeps everything. The other splits
    are untouched; the fingerprint records the count."""
    count = validation_count(size, len(dataset.train), dataset.name, "data.train_size", all_ok=True)
    if count == 0 or count == len(dataset.train):
        return dataset
    train = dataset.train
    where = f"{dataset.name} data.train_size"
    if train.groups is None:
        _, kept = stratified_split(train.labels, count, SUBSET_SEED, where)
    else:
        _, kept = _grouped_split(train, count, SUBSET_SEED, where)
    fingerprint = hashlib.sha256(f"{dataset.fingerprint}|train_size={count}".encode()).hexdigest()
    return replace(dataset, train=train.take(kept), fingerprint=fingerprint)
