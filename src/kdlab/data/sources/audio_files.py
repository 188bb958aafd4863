"""Reading audio files into fixed-length mono int16 waveforms, in the order given.

Files are read with soundfile (libsndfile): WAV (8-bit unsigned, 16-, 24- and 32-bit PCM, 32- and 64-bit float),
AU/SND (GTZAN's format: 16-bit big-endian PCM), FLAC, and whatever else libsndfile recognises by its header.
Every file is turned into float32 in [-1, 1] (PCM scaled by soundfile: 16-bit ``s`` becomes ``s / 32768``),
averaged over its channels to mono, resampled to the wanted rate with ``scipy.signal.resample_poly`` (up and down
factors from the reduced fraction of the two rates, so 16 kHz -> 8 kHz is up 1, down 2, and 22,050 Hz -> 16 kHz is
up 320, down 441), cut or zero-padded at the end to a fixed length and stored as int16 (``round(x * 32768)``, clipped: 16-bit files are stored losslessly).

Files are decoded one after the other in the calling thread: on the 3,000 FSDD recordings (8 kHz, median 0.42 s) that
takes 0.5-1 s, and reading them in a thread pool as the image decoder does measured no faster (2 cores).
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from typing import Sequence

import numpy as np
from tqdm import tqdm

from kdlab.errors import KdlabError

AUDIO_SUFFIXES = (".wav", ".au", ".snd", ".flac")


def is_audio_file(name: str) -> bool:
    return name.lower().endswith(AUDIO_SUFFIXES)


def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The samples of audio file ``path`` as float32 mono in [-1, 1] at ``sample_rate`` Hz.

    Channels are averaged; a file at another rate is resampled with ``resample_poly`` (its output has
    ``ceil(frames * sample_rate / file_rate)`` samples). Values outside [-1, 1] (a float file that overshoots, or
    the ringing of the resampling filter at full scale) are clipped. A file that cannot be opened, is not audio,
    has a damaged header, holds no samples or holds non-finite ones is a :class:`KdlabError` naming it.
    """
    import soundfile  # imported here: with scipy.signal it adds about a second to importing kdlab.data
    from scipy.signal import resample_poly

    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            try:
                data, file_rate = soundfile.read(handle, dtype="float32", always_2d=True)
            except Exception as error:  # libsndfile reports foreign, corrupt and truncated files alike
                reason = getattr(error, "error_string", None) or str(error) or type(error).__name__
                raise KdlabError(f"{path}: not a readable audio file ({reason.strip().rstrip('.')})") from None
    except OSError as error:
        raise KdlabError(f"{path}: cannot read audio file: {error.strerror or error}") from None
    if data.shape[0] == 0:
        raise KdlabError(f"{path}: empty audio file (0 samples)")
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise KdlabError(f"{path}: audio file holds non-finite samples (NaN or infinity)")
    if file_rate != sample_rate:
        common = math.gcd(int(file_rate), int(sample_rate))
        wave = resample_poly(wave, int(sample_rate) // common, int(file_rate) // common).astype(np.float32)
    return np.clip(wave, -1.0, 1.0, out=wave if wave.flags.writeable else None)


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` samples of ``wave``, zero-padded at the end if it is shorter."""
    if wave.shape[0] >= length:
        return wave[:length]
    return np.concatenate([wave, np.zeros(length - wave.shape[0], dtype=wave.dtype)])


def to_int16(wave: np.ndarray) -> np.ndarray:
    """Float samples as int16 PCM: scaled by 32768, rounded (to nearest, ties to even) in float64 and clipped to
    [-32768, 32767], so a 16-bit file's sample ``s`` (read as ``s / 32768``) comes back exactly as ``s`` (lossless),
    and the loader's ``x / 32768`` gives the file's float samples again."""
    return np.clip(np.rint(wave.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def segments(wave: np.ndarray, segment_length: int, hop: int) -> list[np.ndarray]:
    """The windows ``wave[k * hop : k * hop + segment_length]`` that fit entirely in ``wave`` (k = 0, 1, ...), as
    views; a wave shorter than one segment gives one segment, zero-padded at the end.

    This is how a 30-second GTZAN clip becomes ten 3-second segments (hop 3 s) or nineteen (hop 1.5 s).
    """
    if segment_length <= 0 or hop <= 0:
        raise ValueError(f"segments needs segment_length and hop > 0, got {segment_length} and {hop}")
    if wave.shape[0] <= segment_length:
        return [fit_length(wave, segment_length)]
    count = 1 + (wave.shape[0] - segment_length) // hop
    return [wave[k * hop : k * hop + segment_length] for k in range(count)]


def progress_bar(total: int, description: str) -> tqdm:
    """A tqdm bar on stderr, shown only on a terminal and unless ``KDLAB_NO_PROGRESS=1`` (as for images)."""
    hidden = os.environ.get("KDLAB_NO_PROGRESS") == "1" or not sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit="file", file=sys.stderr, disable=hidden, leave=False)


def decode_audio_files(files: Sequence[str | os.PathLike], sample_rate: int, length: int,
                       desc: str = "decoding audio") -> np.ndarray:
    """All ``files`` read at ``sample_rate`` Hz, each cut or zero-padded to ``length`` samples: int16 N x length,
    row ``i`` from ``files[i]``."""
    waves = np.empty((len(files), length), dtype=np.int16)
    with progress_bar(len(files), desc) as bar:
        for i, path in enumerate(files):
            waves[i] = to_int16(fit_length(read_audio(path, sample_rate), length))
            bar.update(1)
    return waves


def sample_rate_option(value, where: str) -> int:
    """Option ``sample_rate`` checked: a whole number of Hz > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise KdlabError(f"{where}: option sample_rate must be a whole number of Hz > 0, got {value!r}")
    return int(value)


def seconds_option(value, name: str, where: str, *, zero_ok: bool = False) -> float:
    """Option ``name`` (a duration in seconds) checked: a finite number > 0 (or >= 0 with ``zero_ok``)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value < 0 or (value == 0 and not zero_ok)):
        bound = ">= 0" if zero_ok else "> 0"
        raise KdlabError(f"{where}: option {name} must be a number of seconds {bound}, got {value!r}")
    return float(value)


def samples(seconds: float, sample_rate: int, name: str, where: str) -> int:
    """``seconds`` at ``sample_rate`` as a whole number of samples (rounded), which must be at least one."""
    count = int(round(seconds * sample_rate))
    if count < 1:
        raise KdlabError(f"{where}: option {name} = {seconds} s is less than one sample at {sample_rate} Hz")
    return count
