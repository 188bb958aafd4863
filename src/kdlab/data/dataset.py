"""The decoded form every data source produces: uint8 images N x H x W x C, or int16 waveforms N x L, with int64
labels, per split.

Images are always NHWC (C = 1 for grey, 3 for colour), whatever the files held, so later code never has to ask
which layout it got. Audio is always mono int16 PCM at the dataset's ``sample_rate``, every clip (or segment of a
clip) cut or padded to one length L; features are computed from it on the training device
(:mod:`kdlab.data.audio_features`). Label ``k`` names ``classes[k]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``images`` uint8 (N, H, W, C) or, for audio, int16 waveforms (N, L); ``labels`` int64 (N,).

    ``groups`` (audio cut into segments, e.g. 30-second GTZAN clips into 3-second segments): int64 (N,), the
    recording each sample was cut from, numbered within the split; None: every sample is its own recording. Clip-level
    metrics average the probabilities of a group's samples, and a validation split never separates a group.

    ``clean_labels`` is set only when ``labels`` were corrupted on purpose (:mod:`kdlab.data.noise`): the true
    labels, kept for analysis. ``index`` is each sample's position in the split it was carved from (None: this is
    that split), so a sample keeps one identity whatever validation split a run carves (teacher-logit caches use it).
    """

    images: np.ndarray
    labels: np.ndarray
    clean_labels: np.ndarray | None = None
    index: np.ndarray | None = None
    groups: np.ndarray | None = None

    def __post_init__(self):
        image = self.images.dtype == np.uint8 and self.images.ndim == 4
        audio = self.images.dtype == np.int16 and self.images.ndim == 2
        if not (image or audio):
            raise ValueError(f"Split images must be uint8 N x H x W x C (or int16 N x L waveforms), got "
                             f"{self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int64 or self.labels.ndim != 1:
            raise ValueError(f"Split labels must be int64 (N,), got {self.labels.dtype} {self.labels.shape}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"Split has {self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if self.clean_labels is not None and self.clean_labels.shape != self.labels.shape:
            raise ValueError(f"Split clean_labels have shape {self.clean_labels.shape}, labels {self.labels.shape}")
        if self.groups is not None and (self.groups.dtype != np.int64 or self.groups.shape != self.labels.shape):
            raise ValueError(f"Split groups must be int64 {self.labels.shape}, got {self.groups.dtype} {self.groups.shape}")

    @property
    def is_audio(self) -> bool:
        return self.images.ndim == 2

    @property
    def clean_labels_or_labels(self) -> np.ndarray:
        """The true labels: ``clean_labels`` when the labels were corrupted, else ``labels``."""
        return self.labels if self.clean_labels is None else self.clean_labels

    @property
    def source_index(self) -> np.ndarray:
        """Each sample's position in the original split (``index``, or 0..N-1)."""
        return np.arange(len(self), dtype=np.int64) if self.index is None else self.index

    def take(self, indices: np.ndarray) -> "Split":
        """The samples at ``indices``, clean labels, original positions and groups included."""
        clean = None if self.clean_labels is None else self.clean_labels[indices]
        groups = None if self.groups is None else self.groups[indices]
        return Split(self.images[indices], self.labels[indices], clean, self.source_index[indices], groups)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole dataset: class names, the train and test splits and an optional validation split.

    ``fingerprint`` identifies the decoded content: :func:`kdlab.data.load_dataset` sets it to the cache key of
    the source files, and :func:`kdlab.data.carve_validation` extends it with the validation-split parameters, so
    anything derived from the data can be keyed by it. ``source_fingerprint`` stays the decoded source's key (no
    validation split, no label noise): images are identified by it plus ``Split.source_index``. A source function
    called directly leaves both empty. ``sample_rate`` (Hz) is set for audio datasets and 0 for images.
    """

    name: str
    classes: list[str]
    train: Split
    test: Split
    val: Split | None
    fingerprint: str
    source_fingerprint: str = ""
    sample_rate: int = 0

    def __post_init__(self):
        splits = [s for s in (self.train, self.test, self.val) if s is not None]
        shapes = {(s.images.dtype.str, s.images.shape[1:]) for s in splits}
        if len(shapes) != 1:
            raise ValueError(f"Dataset {self.name}: splits have different sample shapes {sorted(shapes)}")
        if self.train.is_audio != (self.sample_rate > 0):
            raise ValueError(f"Dataset {self.name}: waveforms need a sample_rate > 0, images sample_rate 0")
        if not self.classes:
            raise ValueError(f"Dataset {self.name} has no classes")
        for split in splits:
            if len(split) and (split.labels.min() < 0 or split.labels.max() >= len(self.classes)):
                raise ValueError(f"Dataset {self.name}: labels out of range for {len(self.classes)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_audio(self) -> bool:
        return self.sample_rate > 0

    @property
    def streamed(self) -> bool:
        """Whether the splits hold image files read batch by batch (``data.residency: stream``), not pixels."""
        return not isinstance(self.train.images, np.ndarray)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W, C) of every image, or (L,) of every waveform."""
        return tuple(int(d) for d in self.train.images.shape[1:])
