"""Log-mel spectrograms computed on the training device, for waveforms that live there as tensors.

:class:`LogMel` turns a float waveform batch N x L into N x 1 x n_mels x frames, an image with one channel:

1. **Framing.** With ``center=True`` the signal is padded by ``n_fft // 2`` samples on each side by reflection
   (``x[-i] = x[i]``, the edge sample not repeated), so frame ``t`` is centred on sample ``t * hop``; the number of
   frames is ``1 + L // hop``. Without centring it is ``1 + (L - n_fft) // hop``. Frame ``t`` is the ``n_fft``
   samples starting at ``t * hop`` of the (padded) signal.
2. **Window.** The periodic Hann window of ``win_length`` samples, ``w[n] = 0.5 - 0.5 cos(2 pi n / win_length)``,
   zero-padded on both sides to ``n_fft`` (``(n_fft - win_length) // 2`` zeros on the left), as ``torch.stft``
   does.
3. **Spectrum.** ``X[k, t] = sum_n w[n] x_t[n] exp(-2 pi i k n / n_fft)`` for the ``B = n_fft // 2 + 1`` bins
   k = 0 .. n_fft // 2 (bin k is the frequency ``k * sample_rate / n_fft``), and ``S = |X| ** power`` (``power=2``:
   the power spectrogram, ``power=1``: the magnitude).
4. **Mel filter bank.** ``M = H @ S`` with the n_mels x B matrix ``H`` of :func:`mel_filterbank`.
5. **Log.** ``log="log"``: ``ln(M + eps)``; ``log="db"``: ``(20 / power) * log10(max(M, eps))``, i.e. decibels
   (``10 log10`` of a power, ``20 log10`` of a magnitude) with the floor ``eps`` (librosa's ``amin``; the
   reference level is 1 and nothing is clipped from the top).

The mel filter bank (:func:`mel_filterbank`). The mel scale is

* ``"slaney"`` (Slaney's Auditory Toolbox): linear below 1 kHz, ``m = f / (200 / 3)`` (so 1 kHz is 15 mel), and
  logarithmic above, ``m = 15 + 27 ln(f / 1000) / ln(6.4)``;
* ``"htk"``: ``m = 2595 log10(1 + f / 700)``.

``n_mels + 2`` points ``f_0 < f_1 < ... < f_{n_mels+1}`` equally spaced in mel between ``f_min`` and ``f_max`` are
mapped back to Hz, and filter ``m`` (m = 0 .. n_mels - 1) is the triangle that rises from 0 at ``f_m`` to 1 at its
centre ``f_{m+1}`` and falls back to 0 at ``f_{m+2}``, evaluated at each bin frequency f:
``H[m, k] = max(0, min((f - f_m) / (f_{m+1} - f_m), (f_{m+2} - f) / (f_{m+2} - f_{m+1})))``. With
``norm="slaney"`` each triangle is scaled by ``2 / (f_{m+2} - f_m)``, which gives every filter the same area (1 in
Hz), so a band's value is the average, not the sum, of the power it covers; ``norm=None`` keeps peak 1.

The defaults (``mel_scale="slaney"``, ``norm="slaney"``) are librosa's defaults: ``librosa.filters.mel(sr=...,
n_fft=..., n_mels=..., htk=False, norm="slaney")`` (for even ``n_fft``; for an odd one this module uses the exact
rfft bin frequencies ``k * sample_rate / n_fft``). With ``mel_scale="htk", norm=None`` it is the HTK / Kaldi-style
bank (``torchaudio``'s ``melscale_fbanks`` default). If ``n_mels`` is large for ``n_fft``, the lowest triangles can
fall between two bins and be all zero; their bands are then the constant ``ln(eps)`` (or the dB floor).
"""

from __future__ import annotations

import contextlib
import math

import torch

MEL_SCALES = ("slaney", "htk")
NORMS = ("slaney", None)
LOGS = ("log", "db")

# Slaney's mel scale: linear with slope 3 / 200 mel per Hz below 1 kHz (15 mel), then log-spaced with 27 mel per
# factor 6.4 in frequency.
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL  # 15
_LOG_STEP = math.log(6.4) / 27.0  # ln(Hz ratio) per mel above the break


def hz_to_mel(freq, mel_scale: str = "slaney") -> torch.Tensor:
    """The mel value of each frequency in Hz (float64 tensor), on the Slaney or the HTK scale (formulas above)."""
    _check_choice("mel_scale", mel_scale, MEL_SCALES)
    f = torch.as_tensor(freq, dtype=torch.float64)
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    logarithmic = _BREAK_MEL + torch.log(f.clamp(min=_BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return torch.where(f >= _BREAK_HZ, logarithmic, f / _LINEAR_HZ_PER_MEL)


def mel_to_hz(mel, mel_scale: str = "slaney") -> torch.Tensor:
    """The frequency in Hz of each mel value (float64 tensor): the inverse of :func:`hz_to_mel`."""
    _check_choice("mel_scale", mel_scale, MEL_SCALES)
    m = torch.as_tensor(mel, dtype=torch.float64)
    if mel_scale == "htk":
        return 700.0 * (torch.pow(10.0, m / 2595.0) - 1.0)
    logarithmic = _BREAK_HZ * torch.exp(_LOG_STEP * (m.clamp(min=_BREAK_MEL) - _BREAK_MEL))
    return torch.where(m >= _BREAK_MEL, logarithmic, m * _LINEAR_HZ_PER_MEL)


def mel_points(n_mels: int, f_min: float, f_max: float, mel_scale: str = "slaney") -> torch.Tensor:
    """The ``n_mels + 2`` frequencies (Hz, float64) equally spaced in mel from ``f_min`` to ``f_max``: filter ``m``
    spans points ``m`` to ``m + 2`` and peaks at point ``m + 1`` (its centre)."""
    low, high = hz_to_mel(f_min, mel_scale).item(), hz_to_mel(f_max, mel_scale).item()
    return mel_to_hz(torch.linspace(low, high, n_mels + 2, dtype=torch.float64), mel_scale)


def mel_filterbank(
    sample_rate: float,
    n_fft: int,
    n_mels: int = 64,
    f_min: float = 0.0,
    f_max: float | None = None,
    mel_scale: str = "slaney",
    norm: str | None = "slaney",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The n_mels x (n_fft // 2 + 1) matrix of triangular mel filters over the rfft bins (see the module docstring
    for the formulas). Computed in float64, returned in ``dtype`` on ``device``. ``f_max`` defaults to
    ``sample_rate / 2``."""
    f_max = _check_mel_args(sample_rate, n_fft, n_mels, f_min, f_max, mel_scale, norm)
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)
    points = mel_points(n_mels, f_min, f_max, mel_scale)
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    weights = torch.minimum(rising, falling).clamp(min=0.0)
    if norm == "slaney":
        weights = weights * (2.0 / (upper - lower))
    return weights.to(dtype=dtype, device=device)


class LogMel(torch.nn.Module):
    """Log-mel spectrogram of a float waveform batch N x L: N x 1 x n_mels x frames, in float32.

    ``hop_length`` defaults to ``n_fft // 4``, ``win_length`` to ``n_fft``, ``f_max`` to ``sample_rate / 2``.
    ``eps`` is the offset inside ``ln`` for ``log="log"`` and the floor (``amin``) for ``log="db"``. The window and
    the filter bank are non-persistent buffers: they follow ``.to(device)`` but are not in the state dict (they are
    recomputed from the arguments). The computation runs in float32 with autocast disabled, whatever the caller's
    autocast state or the input's dtype (int16 samples should be scaled to [-1, 1) first, e.g. ``x / 32768``).
    """

    window: torch.Tensor
    filterbank: torch.Tensor

    def __init__(
        self,
        sample_rate: float,
        n_fft: int = 512,
        hop_length: int | None = None,
        win_length: int | None = None,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "slaney",
        norm: str | None = "slaney",
        power: float = 2.0,
        log: str = "log",
        eps: float = 1e-6,
        center: bool = True,
    ):
        super().__init__()
        f_max = _check_mel_args(sample_rate, n_fft, n_mels, f_min, f_max, mel_scale, norm)
        hop_length = n_fft // 4 if hop_length is None else hop_length
        win_length = n_fft if win_length is None else win_length
        if not _is_int(hop_length) or hop_length < 1:
            raise ValueError(f"hop_length must be an integer >= 1, got {hop_length!r}")
        if not _is_int(win_length) or not 1 <= win_length <= n_fft:
            raise ValueError(f"win_length must be an integer in [1, n_fft={n_fft}], got {win_length!r}")
        if not (isinstance(power, (int, float)) and math.isfinite(power) and power > 0):
            raise ValueError(f"power must be a finite number > 0, got {power!r}")
        _check_choice("log", log, LOGS)
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        if not isinstance(center, bool):
            raise ValueError(f"center must be True or False, got {center!r}")
        self.sample_rate = sample_rate
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.win_length = int(win_length)
        self.n_mels = int(n_mels)
        self.f_min = float(f_min)
        self.f_max = float(f_max)
        self.mel_scale = mel_scale
        self.norm = norm
        self.power = float(power)
        self.log = log
        self.eps = float(eps)
        self.center = center
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("filterbank", mel_filterbank(sample_rate, self.n_fft, self.n_mels, self.f_min,
                                                          self.f_max, mel_scale, norm), persistent=False)

    @property
    def min_length(self) -> int:
        """The shortest waveform that gives a frame: ``n_fft // 2 + 1`` samples when centred (reflection padding
        needs more samples than it pads), ``n_fft`` otherwise."""
        return self.n_fft // 2 + 1 if self.center else self.n_fft

    def frames(self, length: int) -> int:
        """The number of frames of a waveform of ``length`` samples: ``1 + length // hop`` when centred,
        ``1 + (length - n_fft) // hop`` otherwise."""
        if not _is_int(length) or length < self.min_length:
            raise ValueError(f"length must be an integer >= {self.min_length} (n_fft={self.n_fft}, "
                             f"center={self.center}), got {length!r}")
        if self.center:
            return 1 + length // self.hop_length
        return 1 + (length - self.n_fft) // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """N x L float waveforms -> N x 1 x n_mels x frames(L) float32 log-mel spectrograms."""
        if wave.dim() != 2:
            raise ValueError(f"wave must be N x L (a batch of mono waveforms), got shape {tuple(wave.shape)}")
        self.frames(wave.shape[1])  # validates the length
        with _autocast_disabled(wave.device.type):
            spectrum = torch.stft(
                wave.float(), self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                window=self.window.float(), center=self.center, pad_mode="reflect", normalized=False,
                onesided=True, return_complex=True,
            )  # N x B x T
            if self.power == 2.0:
                spec = spectrum.real.square() + spectrum.imag.square()
            elif self.power == 1.0:
                spec = spectrum.abs()
            else:
                spec = spectrum.abs().pow(self.power)
            mel = torch.matmul(self.filterbank.float(), spec)  # (M x B) @ (N x B x T) -> N x M x T
            if self.log == "log":
                out = torch.log(mel + self.eps)
            else:
                out = (20.0 / self.power) * torch.log10(mel.clamp(min=self.eps))
        return out.unsqueeze(1)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"win_length={self.win_length}, n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}, "
                f"mel_scale={self.mel_scale!r}, norm={self.norm!r}, power={self.power}, log={self.log!r}, "
                f"eps={self.eps}, center={self.center}")


def _autocast_disabled(device_type: str):
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type without autocast: nothing to disable
        return contextlib.nullcontext()


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_mel_args(sample_rate, n_fft, n_mels, f_min, f_max, mel_scale, norm) -> float:
    """Validate the filter-bank arguments; returns ``f_max`` with its default filled in."""
    if not (isinstance(sample_rate, (int, float)) and not isinstance(sample_rate, bool)
            and math.isfinite(sample_rate) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a finite number > 0, got {sample_rate!r}")
    if not _is_int(n_fft) or n_fft < 2:
        raise ValueError(f"n_fft must be an integer >= 2, got {n_fft!r}")
    if not _is_int(n_mels) or n_mels < 1:
        raise ValueError(f"n_mels must be an integer >= 1, got {n_mels!r}")
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if not (isinstance(f_max, (int, float)) and math.isfinite(f_max) and f_max <= nyquist):
        raise ValueError(f"f_max must be <= sample_rate / 2 = {nyquist}, got {f_max!r}")
    if not (isinstance(f_min, (int, float)) and math.isfinite(f_min) and f_min >= 0):
        raise ValueError(f"f_min must be a finite number >= 0, got {f_min!r}")
    if not f_min < f_max:
        raise ValueError(f"f_min must be < f_max, got f_min={f_min!r}, f_max={f_max!r}")
    _check_choice("mel_scale", mel_scale, MEL_SCALES)
    _check_choice("norm", norm, NORMS)
    return float(f_max)
