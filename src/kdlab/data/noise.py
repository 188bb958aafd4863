"""Seeded label noise on the training labels, with the clean labels kept for analysis.

Two standard corruptions of a fraction ``rate`` of the training labels:

* ``symmetric``: exactly ``round(rate * N)`` samples, chosen uniformly without replacement, get a label drawn
  uniformly from the *other* K - 1 classes, so ``rate`` is the true fraction of wrong labels (some papers draw from
  all K classes, which makes the real noise rate ``rate * (K - 1) / K``);
* ``pair``: the chosen samples get label ``(y + 1) mod K`` (pair flipping, Han et al. 2018, "Co-teaching"), the
  usual asymmetric noise that needs no class-specific confusion table.

The corruption is a pure function of (labels, K, kind, rate, seed); kdlab applies it to the training split before
the validation split is carved from it, so one image has the same noisy label in every run with the same noise
seed whatever the run's own seed. The test split is never corrupted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from kdlab.data.dataset import Dataset

KINDS = ("symmetric", "pair")


@dataclass(frozen=True)
class LabelNoise:
    """What to corrupt: ``kind`` (symmetric or pair), the fraction ``rate`` and the noise ``seed``;
    ``clean_val`` gives the validation split carved from the noisy train split its true labels back."""

    kind: str
    rate: float
    seed: int = 0
    clean_val: bool = False


def corrupt_labels(labels: np.ndarray, num_classes: int, kind: str, rate: float, seed: int) -> np.ndarray:
    """A noisy copy of ``labels`` (int64, N); see the module docstring for the two kinds."""
    if kind not in KINDS:
        raise ValueError(f"label noise kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not 0 <= rate <= 1:
        raise ValueError(f"label noise rate must be in [0, 1], got {rate}")
    if num_classes < 2:
        raise ValueError("label noise needs at least two classes")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    if kind == "symmetric":
        shift = rng.integers(1, num_classes, size=len(chosen))  # 1..K-1: never the true class
        noisy[chosen] = (labels[chosen] + shift) % num_classes
    else:
        noisy[chosen] = (labels[chosen] + 1) % num_classes
    return noisy


def with_label_noise(dataset: Dataset, noise: LabelNoise) -> Dataset:
    """``dataset`` with its training labels corrupted; ``train.clean_labels`` keeps the originals, and the
    fingerprint is extended with the noise parameters. Call it before carving the validation split."""
    train = dataset.train
    noisy = corrupt_labels(train.labels, len(dataset.classes), noise.kind, noise.rate, noise.seed)
    fingerprint = hashlib.sha256(f"{dataset.fingerprint}|noise={noise.kind}:{noise.rate!r}:{noise.seed}".encode()).hexdigest()
    return replace(dataset, train=replace(train, labels=noisy, clean_labels=train.clean_labels_or_labels),
                   fingerprint=fingerprint)


def restore_clean_val(dataset: Dataset) -> Dataset:
    """``dataset`` with the true labels back in its validation split (a no-op if they were never corrupted)."""
    val = dataset.val
    if val is None or val.clean_labels is None:
        return dataset
    return replace(dataset, val=replace(val, labels=val.clean_labels, clean_labels=None))
