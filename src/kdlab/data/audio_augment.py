"""On-device augmentation of whole audio batches: time shift and gain on the waveform, SpecAugment masks on the
log-mel spectrogram.

Like the image :class:`~kdlab.data.augment.CropFlip`, the random parameters are *sampled* first, for many samples
at once from one ``torch.Generator`` (e.g. a whole epoch, seeded by (seed, epoch)), and *applied* per batch to a
slice of them, so a resumed run repeats exactly. Unlike image views they are not finitely many named views
(``discrete = False``): teacher logits cannot be cached per view.

For sample i (all draws uniform, all integers inclusive of both ends):

* **time shift** ``s_i`` in [-S, S] samples, ``S = floor(time_shift * L)``: ``y_i[t] = x_i[t - s_i]`` where
  ``0 <= t - s_i < L`` and 0 elsewhere (a delay for s > 0, an advance for s < 0; zero-filled, not circular);
* **gain** ``g_i`` in [-gain_db, gain_db] dB: ``y_i = 10 ** (g_i / 20) * x_i`` (amplitude dB);
* **frequency masks** (SpecAugment, Park et al., Interspeech 2019): ``freq_masks`` masks, mask k of width
  ``w_ik`` in [0, min(freq_mask_width, F)] bins starting at ``f_ik`` in [0, F - w_ik]; the rows
  ``f_ik <= f < f_ik + w_ik`` of the spectrogram are set to ``fill`` (0, the mean after normalisation). A mask can
  have width 0 and masks can overlap, so up to ``freq_masks`` bands are masked;
* **time masks**: the same over the T frames with ``time_masks`` and ``time_mask_width``.

All random numbers of a call to :meth:`AudioAugment.sample` come from one ``torch.rand`` call on the generator's
device (float64, n x (2 + 2 * freq_masks + 2 * time_masks), columns in the fixed order shift, gain, mask widths and
starts of the frequency masks, then of the time masks), so the parameters depend only on the generator state and
the configuration. An integer in [a, b] is ``a + floor(u * (b - a + 1))`` for a uniform u in [0, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AudioParams:
    """The augmentation parameters of n samples, sampled for waveforms of ``length`` samples and spectrograms of
    ``n_mels`` x ``frames``.

    ``shift`` (int64, n) in samples; ``gain_db`` (float32, n); ``freq_start``, ``freq_width`` (int64,
    n x freq_masks) in mel bins; ``time_start``, ``time_width`` (int64, n x time_masks) in frames. Indexing with a
    slice (or an index tensor) gives the parameters of those samples.
    """

    shift: torch.Tensor
    gain_db: torch.Tensor
    freq_start: torch.Tensor
    freq_width: torch.Tensor
    time_start: torch.Tensor
    time_width: torch.Tensor
    length: int
    n_mels: int
    frames: int

    #: the per-sample fields (sliced by indexing, moved by :meth:`to`); the others are the sampled shapes
    TENSOR_FIELDS = ("shift", "gain_db", "freq_start", "freq_width", "time_start", "time_width")

    def __getitem__(self, index) -> "AudioParams":
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)  # keep the batch dimension
        sliced = {name: getattr(self, name)[index] for name in self.TENSOR_FIELDS}
        return AudioParams(**sliced, length=self.length, n_mels=self.n_mels, frames=self.frames)

    def __len__(self) -> int:
        return self.shift.shape[0]

    def to(self, device: torch.device | str) -> "AudioParams":
        """The same parameters on ``device``."""
        moved = {name: getattr(self, name).to(device) for name in self.TENSOR_FIELDS}
        return AudioParams(**moved, length=self.length, n_mels=self.n_mels, frames=self.frames)


@dataclass(frozen=True)
class AudioAugment:
    """Random time shift (a fraction of the clip length) and gain (dB) of the waveform, then SpecAugment frequency
    and time masks of the spectrogram. All zeros (the default) is the identity."""

    time_shift: float = 0.0
    gain_db: float = 0.0
    freq_masks: int = 0
    freq_mask_width: int = 0
    time_masks: int = 0
    time_mask_width: int = 0
    discrete = False  # continuous parameters, not named views: teacher logits cannot be cached per view

    def __post_init__(self):
        if not (isinstance(self.time_shift, (int, float)) and 0 <= self.time_shift < 1):
            raise ValueError(f"time_shift must be a fraction of the clip length in [0, 1), got {self.time_shift!r}")
        if not (isinstance(self.gain_db, (int, float)) and math.isfinite(self.gain_db) and self.gain_db >= 0):
            raise ValueError(f"gain_db must be a finite number >= 0, got {self.gain_db!r}")
        for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")

    @property
    def is_identity(self) -> bool:
        return (self.time_shift == 0 and self.gain_db == 0 and not self._masks_frequency and not self._masks_time)

    @property
    def _masks_frequency(self) -> bool:
        return self.freq_masks > 0 and self.freq_mask_width > 0

    @property
    def _masks_time(self) -> bool:
        return self.time_masks > 0 and self.time_mask_width > 0

    def max_shift(self, length: int) -> int:
        """S = floor(time_shift * length), the largest |shift| in samples for clips of ``length`` samples."""
        return int(math.floor(self.time_shift * length))

    def sample(self, n: int, generator: torch.Generator, length: int, n_mels: int, frames: int) -> AudioParams:
        """Draw the parameters of ``n`` samples on the generator's device, for waveforms of ``length`` samples and
        spectrograms of ``n_mels`` x ``frames``."""
        for name, value, least in (("n", n, 0), ("length", length, 1), ("n_mels", n_mels, 1),
                                   ("frames", frames, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        device = generator.device
        fm, tm = self.freq_masks, self.time_masks
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        u = torch.rand((n, 2 + 2 * fm + 2 * tm), generator=generator, device=device, dtype=dtype)
        columns = iter(u.split([1, 1, fm, fm, tm, tm], dim=1))
        max_shift = self.max_shift(length)
        shift = _uniform_int(next(columns)[:, 0], -max_shift, max_shift)
        gain_db = ((2 * next(columns)[:, 0] - 1) * self.gain_db).float()
        freq_width = _uniform_int(next(columns), 0, min(self.freq_mask_width, n_mels))
        freq_start = _uniform_int(next(columns), 0, n_mels - freq_width)
        time_width = _uniform_int(next(columns), 0, min(self.time_mask_width, frames))
        time_start = _uniform_int(next(columns), 0, frames - time_width)
        return AudioParams(shift, gain_db, freq_start, freq_width, time_start, time_width, length, n_mels, frames)

    def apply_waveform(self, wave: torch.Tensor, params: AudioParams) -> torch.Tensor:
        """Shift and gain of float waveforms N x L (``params`` of the N samples, sampled for length L); returns a new
        N x L tensor of the same dtype (``wave`` itself when neither is enabled)."""
        if wave.dim() != 2:
            raise ValueError(f"wave must be N x L, got shape {tuple(wave.shape)}")
        _check_batch(wave.shape[0], params)
        if wave.shape[1] != params.length:
            raise ValueError(f"the params were sampled for length {params.length}, the waves have {wave.shape[1]}")
        out = wave
        max_shift = self.max_shift(params.length)
        if max_shift > 0:
            n, length = wave.shape
            # Row i of the output is the window starting at S - s_i of the zero-padded row: unfold makes all 2S + 1
            # windows as a view, and one advanced index copies the N chosen ones (no N x L index tensor).
            padded = torch.nn.functional.pad(out, (max_shift, max_shift))
            windows = padded.unfold(1, length, 1)  # N x (2S + 1) x L, a view
            start = max_shift - params.shift.to(wave.device)
            out = windows[torch.arange(n, device=wave.device), start]
        if self.gain_db > 0:
            factor = torch.pow(10.0, params.gain_db.to(device=wave.device, dtype=torch.float32) / 20.0)
            out = out * factor.to(wave.dtype)[:, None]
        return out

    def apply_spectrogram(self, spec: torch.Tensor, params: AudioParams, fill: float = 0.0) -> torch.Tensor:
        """SpecAugment masks of spectrograms N x C x F x T (C = 1 for log-mel; every channel gets the sample's
        masks): masked cells are set to ``fill``. Returns a new tensor (``spec`` itself when no masks are
        enabled)."""
        if spec.dim() != 4:
            raise ValueError(f"spec must be N x C x F x T, got shape {tuple(spec.shape)}")
        _check_batch(spec.shape[0], params)
        if tuple(spec.shape[2:]) != (params.n_mels, params.frames):
            raise ValueError(f"the params were sampled for {params.n_mels} x {params.frames} spectrograms, got "
                             f"{spec.shape[2]} x {spec.shape[3]}")
        if not (self._masks_frequency or self._masks_time):
            return spec
        n, _, bins, frames = spec.shape
        rows = _covered(params.freq_start.to(spec.device), params.freq_width.to(spec.device), bins)  # N x F
        cols = _covered(params.time_start.to(spec.device), params.time_width.to(spec.device), frames)  # N x T
        mask = rows[:, None, :, None] | cols[:, None, None, :]
        return spec.masked_fill(mask, fill)


def _uniform_int(u: torch.Tensor, low, high) -> torch.Tensor:
    """Integers uniform in [low, high] (``high`` may be a tensor like ``u``) from uniforms ``u`` in [0, 1)."""
    span = high - low + 1
    return (low + torch.minimum(torch.floor(u * span), torch.as_tensor(span - 1, dtype=u.dtype))).long()


def _covered(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """N x size booleans: position p is inside one of the intervals [start_k, start_k + width_k) of its row."""
    position = torch.arange(size, device=start.device)
    inside = (position >= start[:, :, None]) & (position < (start + width)[:, :, None])  # N x masks x size
    return inside.any(dim=1)


def _check_batch(n: int, params: AudioParams) -> None:
    if n != len(params):
        raise ValueError(f"a batch of {n} samples needs the params of {n} samples, got {len(params)}")
