"""Audio folders, one sub-folder per class, in either of two layouts:

(a) split folders, as the image folder source reads them (:mod:`kdlab.data.sources.folder`):
    ``train/<class>/<clip>``, ``test/<class>/<clip>`` and optionally ``val/<class>/...`` (or ``valid/``);
(b) class folders directly under ``path``, as GTZAN (Tzanetakis & Cook 2002: 10 genres x 100 clips of 30 s,
    22,050 Hz mono 16-bit AU) ships them: ``genres/<genre>/<genre>.000NN.au``. ``path`` may be the ``genres``
    folder itself or a folder whose only sub-folder is ``genres`` (files beside it are ignored). GTZAN has no
    official split, so the test split is a stratified ``test_fraction`` of the clips drawn with ``split_seed``
    (``sklearn.model_selection.train_test_split(stratify=...)``, as :mod:`kdlab.data.split` does), whole clips
    only. GTZAN repeats some clips and artists across its files (Sturm 2013, "The GTZAN dataset: its contents,
    its faults, their effects on evaluation, and the future use"), so accuracies on a random split are optimistic.

Layout (a) is used as soon as ``path`` holds a ``train``, ``test``, ``val`` or ``valid`` folder. Clips are
``.wav``, ``.au``, ``.snd`` or ``.flac`` files (any case, read by :mod:`kdlab.data.sources.audio_files`); hidden
entries are skipped, anything else in a class folder is an error, and so are audio files lying outside the class
folders. Class names are the sorted class folder names (of ``train/`` in layout (a); the other split folders must
have the same ones); within a class, clips are taken in sorted name order.

Options: every clip is read at ``sample_rate`` Hz and cut or zero-padded at the end to ``clip_seconds``. With
``segment_seconds > 0`` each clip is then cut into the segments of that length starting every
``segment_hop_seconds`` (0: the segment length, no overlap) that fit in the clip (a 30 s clip gives ten 3 s
segments, or nineteen with a 1.5 s hop); every segment is a sample with its clip's label, and ``Split.groups``
numbers the clip it came from (0, 1, ... within each split, a clip's segments contiguous), so clip-level metrics
can pool them and a validation split carved later keeps them together. With ``segment_seconds == 0`` a sample is
a whole clip and there are no groups. ``test_fraction`` and ``split_seed`` apply to layout (b) only.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

from kdlab.data.dataset import Dataset, Split
from kdlab.data.sources.audio_files import (AUDIO_SUFFIXES, decode_audio_files, sample_rate_option, samples,
                                            seconds_option, segments)
from kdlab.data.sources.common import data_folder, make_split
from kdlab.data.sources.folder import (VAL_FOLDER_NAMES, SampleFiles, class_folders, list_split, split_folders,
                                       visible_entries)
from kdlab.data.split import stratified_split
from kdlab.errors import KdlabError

AUDIO_FILES = SampleFiles(AUDIO_SUFFIXES, "an audio file", "audio files", "<clip>.wav")
GTZAN_FOLDER = "genres"


def class_root(root: Path) -> Path:
    """The folder holding the class folders in layout (b): ``root``, or ``root/genres`` when that is the only
    sub-folder of ``root``."""
    sub_folders = [entry.name for entry in visible_entries(root) if entry.is_dir()]
    return root / GTZAN_FOLDER if sub_folders == [GTZAN_FOLDER] else root


def cut_segments(clips: np.ndarray, labels: np.ndarray, segment_length: int, hop: int) -> Split:
    """Every clip (a row of ``clips``) cut into its segments: a split of segments, with groups = the clip."""
    per_clip = len(segments(clips[0], segment_length, hop)) if len(clips) else 0
    waves = np.empty((len(clips) * per_clip, segment_length), dtype=np.int16)
    for i, clip in enumerate(clips):
        for k, segment in enumerate(segments(clip, segment_length, hop)):
            waves[i * per_clip + k] = segment
    groups = np.repeat(np.arange(len(clips), dtype=np.int64), per_clip)
    return make_split(waves, np.repeat(labels, per_clip), groups)


def checked_fraction(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise KdlabError(f"{where}: option test_fraction must be a fraction in (0, 1), got {value!r}")
    return float(value)


def checked_seed(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**32:
        raise KdlabError(f"{where}: option split_seed must be a whole number in [0, 2**32), got {value!r}")
    return int(value)


def decode_audio_folder(
    path: str,
    *,
    sample_rate: int = 22050,
    clip_seconds: float = 30.0,
    segment_seconds: float = 0.0,
    segment_hop_seconds: float = 0.0,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """The audio class folders under ``path`` (layout (a) ``train/ test/ [val/]``, or (b) class folders with a
    seeded stratified test split), clips at ``sample_rate`` Hz fit to ``clip_seconds``, optionally cut into
    segments of ``segment_seconds`` every ``segment_hop_seconds`` (0: no overlap)."""
    root = data_folder(path)
    where = str(root)
    sample_rate = sample_rate_option(sample_rate, where)
    clip_seconds = seconds_option(clip_seconds, "clip_seconds", where)
    segment_seconds = seconds_option(segment_seconds, "segment_seconds", where, zero_ok=True)
    hop_seconds = seconds_option(segment_hop_seconds, "segment_hop_seconds", where, zero_ok=True)
    test_fraction = checked_fraction(test_fraction, where)
    split_seed = checked_seed(split_seed, where)
    if segment_seconds > clip_seconds:
        raise KdlabError(f"{where}: option segment_seconds ({segment_seconds} s) is longer than clip_seconds "
                         f"({clip_seconds} s)")
    if hop_seconds and not segment_seconds:
        raise KdlabError(f"{where}: option segment_hop_seconds needs segment_seconds > 0 (segments are off)")
    clip_length = samples(clip_seconds, sample_rate, "clip_seconds", where)
    if segment_seconds:
        segment_length = samples(segment_seconds, sample_rate, "segment_seconds", where)
        hop = samples(hop_seconds, sample_rate, "segment_hop_seconds", where) if hop_seconds else segment_length

    if any((root / name).is_dir() for name in ("train", "test", *VAL_FOLDER_NAMES)):
        folders = split_folders(root, AUDIO_FILES)
        classes = class_folders(folders["train"], AUDIO_FILES)
        listed = {split: list_split(f, classes, folders["train"], AUDIO_FILES) for split, f in folders.items()}
    else:
        clip_folder = class_root(root)
        classes = class_folders(clip_folder, AUDIO_FILES)
        files, labels = list_split(clip_folder, classes, clip_folder, AUDIO_FILES)
        count = int(round(test_fraction * len(files)))
        kept, taken = stratified_split(labels, count, split_seed, f"{clip_folder} (test_fraction {test_fraction})")
        listed = {split: ([files[i] for i in indices], labels[indices])
                  for split, indices in (("train", kept), ("test", taken))}

    all_files = [file for files, _ in listed.values() for file in files]
    clips = decode_audio_files(all_files, sample_rate, clip_length, f"decoding {root.name}")
    splits: dict[str, Split] = {}
    start = 0
    for split, (files, labels) in listed.items():
        split_clips = clips[start : start + len(files)]
        start += len(files)
        if segment_seconds:
            splits[split] = cut_segments(split_clips, labels, segment_length, hop)
        else:
            splits[split] = make_split(split_clips, labels)
    return Dataset(
        name=root.name,
        classes=classes,
        train=splits["train"],
        test=splits["test"],
        val=splits.get("val"),
        fingerprint="",
        sample_rate=sample_rate,
    )
