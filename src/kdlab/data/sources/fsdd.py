"""The Free Spoken Digit Dataset (FSDD, Jackson et al., https://github.com/Jakobovski/free-spoken-digit-dataset):
English spoken digits, 8 kHz mono 16-bit WAV, 50 recordings of each digit by each speaker (3,000 from 6 speakers in
the version in ``/work/shared/data/fsdd``).

Layout: ``<path>/recordings/{digit}_{speaker}_{index}.wav`` (e.g. ``7_jackson_32.wav``), as in the dataset's
repository; ``path`` may also be the ``recordings`` folder itself. Next to ``recordings/`` anything that is not an
audio file (``README.md``, ``metadata.py``, other folders) is ignored; inside it every visible entry must be a
recording so named, else the file is reported. Hidden entries are skipped.

Labels: the digit, classes ``"0"`` .. ``"9"``. The split is the official one of the dataset's README: recordings
with index 0-4 are the test set, index 5 and above the training set (300 test and 2,700 training recordings for
the 6-speaker version). With ``test_speakers`` (a list of speaker names) the split is speaker-held-out instead:
every recording of those speakers is the test set and every recording of the others the training set, so the test
measures recognition of voices never heard in training (the official split is at ceiling for small CNNs: kdlab's
audio_cnn_small reaches 1.000). There is no official validation split (``load_dataset(..., val_size=...)`` carves one
from the training voices); with ``val_speakers`` every recording of those speakers is the validation split instead,
so that what is fitted or selected on it (a temperature, a hyper-parameter) sees voices unheard in training as the
test does (a split carved from the training voices is at 0.99-1.00 accuracy and fits temperatures towards 0).

Every recording is read at ``sample_rate`` (resampled from 8 kHz if another rate is asked for) and cut or
zero-padded at the end to ``round(seconds * sample_rate)`` samples; FSDD's recordings are trimmed of silence and
last 0.14-2.3 s (median 0.42 s, 99% at most 1 s). Order: training then test recordings, each sorted by (digit, speaker,
index).
"""

from __future__ import annotations

import re
from pathlib import Path

from kdlab.data.dataset import Dataset
from kdlab.data.sources.audio_files import (decode_audio_files, is_audio_file, sample_rate_option, samples,
                                            seconds_option)
from kdlab.data.sources.common import data_folder, make_split
from kdlab.data.sources.folder import visible_entries
from kdlab.errors import KdlabError

RECORDINGS_FOLDER = "recordings"
RECORDING_NAME = re.compile(r"(?P<digit>[0-9])_(?P<speaker>[^_]+)_(?P<index>[0-9]+)\.(?i:wav)")
LAST_TEST_INDEX = 4  # index 0-4: test, 5 and above: train (the dataset's README)
CLASSES = [str(digit) for digit in range(10)]
EXPECTED = "a file named {digit}_{speaker}_{index}.wav, e.g. 7_jackson_32.wav"


def recordings_folder(root: Path) -> Path:
    """``root/recordings`` if there is one (audio files beside it are an error), else ``root`` itself."""
    folder = root / RECORDINGS_FOLDER
    if folder.is_dir():
        for entry in visible_entries(root):
            if entry.is_file() and is_audio_file(entry.name):
                raise KdlabError(f"{entry.path}: FSDD recordings must be inside {folder}, not next to it")
        return folder
    if not any(entry.is_file() and is_audio_file(entry.name) for entry in visible_entries(root)):
        raise KdlabError(f"{root}: no {RECORDINGS_FOLDER}/ folder and no recordings (expected "
                         f"{root}/{RECORDINGS_FOLDER}/{{digit}}_{{speaker}}_{{index}}.wav)")
    return root


def list_recordings(folder: Path) -> list[tuple[int, str, int, str]]:
    """(digit, speaker, index, path) of every recording in ``folder``, sorted; a foreign entry is an error."""
    found = {}
    for entry in visible_entries(folder):
        match = RECORDING_NAME.fullmatch(entry.name)
        if not (entry.is_file() and match):
            raise KdlabError(f"{entry.path}: not an FSDD recording (expected {EXPECTED})")
        key = (int(match["digit"]), match["speaker"], int(match["index"]))
        if key in found:
            raise KdlabError(f"{entry.path}: the same recording as {found[key]} (digit {key[0]}, speaker {key[1]}, "
                             f"index {key[2]})")
        found[key] = entry.path
    return [(*key, found[key]) for key in sorted(found)]


def speakers_option(value, speakers: set[str], where: str, option: str = "test_speakers") -> set[str] | None:
    """``test_speakers`` / ``val_speakers`` as a set: None, or a non-empty list of distinct speakers of the dataset,
    not all of them."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(name, str) for name in value) \
            or len(set(value)) != len(value):
        raise KdlabError(f"{where}: option {option} must be a non-empty list of distinct speaker names, got {value!r}")
    unknown = sorted(set(value) - speakers)
    if unknown:
        raise KdlabError(f"{where}: option {option}: no recordings of {', '.join(unknown)} "
                         f"(speakers: {', '.join(sorted(speakers))})")
    if set(value) == speakers:
        raise KdlabError(f"{where}: option {option} holds every speaker; leave at least one for training")
    return set(value)


def decode_fsdd(path: str, *, sample_rate: int = 8000, seconds: float = 1.0,
                test_speakers: list[str] | None = None, val_speakers: list[str] | None = None) -> Dataset:
    """FSDD under ``path`` (the folder holding ``recordings/``, or ``recordings/`` itself) with its official split
    (index 0-4 test, 5 and above train), or held out by speaker with ``test_speakers`` (and ``val_speakers``: the
    validation split); every recording at ``sample_rate`` Hz fit to ``seconds``."""
    root = data_folder(path)
    sample_rate = sample_rate_option(sample_rate, str(root))
    length = samples(seconds_option(seconds, "seconds", str(root)), sample_rate, "seconds", str(root))
    folder = recordings_folder(root)
    recordings = list_recordings(folder)
    speakers = {speaker for _, speaker, _, _ in recordings}
    held_out = speakers_option(test_speakers, speakers, str(root))
    validation = speakers_option(val_speakers, speakers, str(root), "val_speakers") or set()
    if validation and held_out is None:
        raise KdlabError(f"{root}: option val_speakers needs test_speakers (the official split is by index)")
    if validation & (held_out or set()) or (held_out or set()) | validation == speakers:
        raise KdlabError(f"{root}: options test_speakers and val_speakers must be different speakers and leave at "
                         f"least one for training")
    if held_out is None:
        side = ["test" if index <= LAST_TEST_INDEX else "train" for _, _, index, _ in recordings]
    else:
        side = ["test" if speaker in held_out else "val" if speaker in validation else "train"
                for _, speaker, _, _ in recordings]
    listed = {split: [(digit, file) for (digit, _, _, file), where in zip(recordings, side) if where == split]
              for split in ("train", "val", "test")}
    for split in ("train", "test"):
        if not listed[split]:
            which = f"index 0-{LAST_TEST_INDEX}" if split == "test" else f"index {LAST_TEST_INDEX + 1} and above"
            raise KdlabError(f"{folder}: no {split} recordings ({which})")
    files = [file for items in listed.values() for _, file in items]
    waves = decode_audio_files(files, sample_rate, length, "decoding fsdd")
    splits, start = {}, 0
    for split, items in listed.items():
        splits[split] = make_split(waves[start:start + len(items)], [digit for digit, _ in items]) if items else None
        start += len(items)
    return Dataset(name="fsdd", classes=list(CLASSES), **splits, fingerprint="", sample_rate=sample_rate)
