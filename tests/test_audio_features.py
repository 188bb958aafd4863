"""Log-mel features: against an independent float64 NumPy implementation, sine peaks, frame counts, batches, autocast,
argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdlab.data.audio_features import LogMel, hz_to_mel, mel_filterbank, mel_to_hz

# ---------------------------------------------------------------------------------------------------------------
# The reference: plain NumPy / math in float64, written from the formulas (scalar mel conversions, explicit loops
# over filters and bins, framing by slicing the padded signal, np.fft.rfft).


def ref_hz_to_mel(f: float, scale: str) -> float:
    if scale == "htk":
        return 2595.0 * math.log10(1.0 + f / 700.0)
    if f < 1000.0:
        return f * 3.0 / 200.0
    return 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def ref_mel_to_hz(m: float, scale: str) -> float:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if m < 15.0:
        return m * 200.0 / 3.0
    return 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def ref_points(n_mels, f_min, f_max, scale):
    low, high = ref_hz_to_mel(f_min, scale), ref_hz_to_mel(f_max, scale)
    return [ref_mel_to_hz(low + (high - low) * i / (n_mels + 1), scale) for i in range(n_mels + 2)]


def ref_filterbank(sr, n_fft, n_mels, f_min, f_max, scale, norm):
    points = ref_points(n_mels, f_min, f_max, scale)
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lower, centre, upper = points[m], points[m + 1], points[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lower < f <= centre:
                value = (f - lower) / (centre - lower)
            elif centre < f < upper:
                value = (upper - f) / (upper - centre)
            else:
                value = 0.0
            if norm == "slaney":
                value *= 2.0 / (upper - lower)
            bank[m, k] = value
    return bank


def ref_logmel(wave, sr, n_fft, hop, win, n_mels, f_min, f_max, scale, norm, power, log, eps, center):
    wave = np.asarray(wave, dtype=np.float64)
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = [0.5 - 0.5 * math.cos(2 * math.pi * n / win) for n in range(win)]
    bank = ref_filterbank(sr, n_fft, n_mels, f_min, f_max, scale, norm)
    out = []
    for signal in wave:
        padded = np.pad(signal, n_fft // 2, mode="reflect") if center else signal
        frames = 1 + (len(padded) - n_fft) // hop
        spec = np.stack([np.abs(np.fft.rfft(padded[t * hop:t * hop + n_fft] * window)) ** power
                         for t in range(frames)], axis=1)
        mel = bank @ spec
        out.append(np.log(mel + eps) if log == "log" else (20.0 / power) * np.log10(np.maximum(mel, eps)))
    return np.stack(out)[:, None]


def make_wave(n=2, length=4000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    sines = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t + 1.0)
    return sines + 0.05 * rng.standard_normal((n, length))


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_mel_scale_conversions(scale):
    freqs = [0.0, 50.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 11025.0]
    mels = hz_to_mel(torch.tensor(freqs), scale)
    assert mels.dtype == torch.float64
    np.testing.assert_allclose(mels.numpy(), [ref_hz_to_mel(f, scale) for f in freqs], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mel_to_hz(mels, scale).numpy(), freqs, rtol=1e-12, atol=1e-9)
    if scale == "slaney":  # the documented values: 1 kHz is 15 mel, 440 Hz is 6.6 mel (librosa.hz_to_mel)
        assert hz_to_mel(1000.0).item() == pytest.approx(15.0, abs=1e-12)
        assert hz_to_mel(440.0).item() == pytest.approx(6.6, abs=1e-12)


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize("sr, n_fft, n_mels, f_min, f_max", [(16000, 512, 40, 0.0, None), (22050, 1024, 64, 20.0,
                                                                                               8000.0),
                                                              (8000, 255, 24, 100.0, 3800.0)])
def test_filterbank_matches_the_loops(scale, norm, sr, n_fft, n_mels, f_min, f_max):
    bank = mel_filterbank(sr, n_fft, n_mels, f_min, f_max, scale, norm, dtype=torch.float64)
    assert bank.shape == (n_mels, n_fft // 2 + 1) and bank.dtype == torch.float64
    expected = ref_filterbank(sr, n_fft, n_mels, f_min, sr / 2 if f_max is None else f_max, scale, norm)
    np.testing.assert_allclose(bank.numpy(), expected, rtol=1e-10, atol=1e-13)
    assert mel_filterbank(sr, n_fft, n_mels, f_min, f_max, scale, norm).dtype == torch.float32


def test_slaney_norm_gives_equal_areas():
    # With the 2 / (f_{m+2} - f_m) scaling every triangle has area 1 in Hz (checked on a fine frequency grid).
    sr, n_fft = 16000, 16384
    bank = mel_filterbank(sr, n_fft, 20, dtype=torch.float64)
    areas = bank.sum(dim=1) * (sr / n_fft)
    torch.testing.assert_close(areas, torch.ones(20, dtype=torch.float64), rtol=2e-3, atol=0)


@pytest.mark.parametrize("scale, norm, log, power", [("slaney", "slaney", "log", 2.0), ("htk", None, "log", 2.0),
                                                     ("slaney", None, "db", 2.0), ("htk", "slaney", "db", 2.0),
                                                     ("slaney", "slaney", "db", 1.0), ("htk", None, "log", 1.5)])
def test_logmel_matches_the_numpy_reference(scale, norm, log, power):
    wave = make_wave()
    args = dict(sample_rate=16000, n_fft=400, hop_length=160, win_length=320, n_mels=40, f_min=30.0, f_max=7600.0,
                mel_scale=scale, norm=norm, power=power, log=log, eps=1e-6)
    expected = ref_logmel(wave, 16000, 400, 160, 320, 40, 30.0, 7600.0, scale, norm, power, log, 1e-6, True)
    out = LogMel(**args)(torch.from_numpy(wave).float())
    assert out.dtype == torch.float32 and out.shape == expected.shape
    atol = 5e-5 if log == "log" else 2e-4  # float32 against float64; dB is 4.3 (or 8.7) times the natural log
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("center", [True, False])
def test_defaults_and_centring_match_the_reference(center):
    wave = make_wave(n=1, length=3000, seed=1)
    expected = ref_logmel(wave, 16000, 512, 128, 512, 64, 0.0, 8000.0, "slaney", "slaney", 2.0, "log", 1e-6, center)
    module = LogMel(16000, center=center)
    assert (module.hop_length, module.win_length, module.f_max) == (128, 512, 8000.0)
    out = module(torch.from_numpy(wave).float())
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=5e-5)


def test_db_floor_is_eps():
    module = LogMel(16000, n_fft=256, n_mels=16, log="db", eps=1e-4)
    out = module(torch.zeros(1, 2000))
    torch.testing.assert_close(out, torch.full_like(out, -40.0))
    out_log = LogMel(16000, n_fft=256, n_mels=16, eps=1e-4)(torch.zeros(1, 2000))
    torch.testing.assert_close(out_log, torch.full_like(out_log, math.log(1e-4)))


@pytest.mark.parametrize("scale, norm", [("slaney", "slaney"), ("slaney", None), ("htk", "slaney"), ("htk", None)])
def test_a_sine_peaks_in_the_band_of_the_closest_centre(scale, norm):
    sr, n_mels = 16000, 40
    module = LogMel(sr, n_fft=1024, hop_length=256, n_mels=n_mels, mel_scale=scale, norm=norm)
    centres = np.array(ref_points(n_mels, 0.0, sr / 2, scale)[1:-1])
    t = np.arange(8000) / sr
    for band in (4, 12, 25, 37):
        # at a band centre, and a quarter of the way towards the next centre (still closest to this one)
        for f in (centres[band], 0.75 * centres[band] + 0.25 * centres[band + 1]):
            closest = int(np.argmin(np.abs(centres - f)))
            assert closest == band
            wave = torch.from_numpy(0.5 * np.sin(2 * np.pi * f * t)).float()[None]
            spectrum = module(wave)[0, 0].mean(dim=1)  # average over frames: n_mels
            assert int(spectrum.argmax()) == closest, (band, f)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("n_fft, hop", [(512, None), (400, 160), (256, 100), (64, 1)])
def test_frames_is_the_output_length(center, n_fft, hop):
    module = LogMel(8000, n_fft=n_fft, hop_length=hop, n_mels=8, center=center)
    for length in (module.min_length, module.min_length + 1, 1000, 1003, 4096):
        assert module(torch.randn(1, length)).shape == (1, 1, 8, module.frames(length)), length
    with pytest.raises(ValueError, match="length"):
        module.frames(module.min_length - 1)
    with pytest.raises(ValueError, match="length"):
        module(torch.randn(1, module.min_length - 1))


def test_batches_of_one_and_three():
    module = LogMel(16000, n_fft=256, n_mels=32)
    wave = torch.from_numpy(make_wave(n=3, length=2500)).float()
    batch = module(wave)
    assert batch.shape == (3, 1, 32, module.frames(2500))
    for i in range(3):
        single = module(wave[i:i + 1])
        assert single.shape == (1, 1, 32, module.frames(2500))
        torch.testing.assert_close(single, batch[i:i + 1], rtol=1e-5, atol=1e-5)


def test_float32_under_bf16_autocast_and_for_other_input_dtypes():
    module = LogMel(16000, n_fft=512, n_mels=64)
    wave = torch.from_numpy(make_wave(n=3, length=4000)).float()
    reference = module(wave)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(wave)
        out_bf16_input = module(wave.bfloat16())
    assert out.dtype == torch.float32 and out_bf16_input.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    # bfloat16 input keeps about 3 significant digits of the samples; the features stay close
    assert (out_bf16_input - reference).abs().mean() < 0.05
    torch.testing.assert_close(module(wave.double()), reference)
    # int16 samples scaled as the loader does
    pcm = (wave * 32768).round().clamp(-32768, 32767).to(torch.int16)
    torch.testing.assert_close(module(pcm / 32768.0), reference, rtol=1e-3, atol=1e-3)


def test_buffers_are_not_in_the_state_dict_but_follow_the_module():
    module = LogMel(16000, n_fft=256, n_mels=16)
    assert module.state_dict() == {}
    assert module.window.shape == (256,) and module.filterbank.shape == (16, 129)
    assert {name for name, _ in module.named_buffers()} == {"window", "filterbank"}
    torch.testing.assert_close(module.window, torch.hann_window(256, periodic=True))
    module.double()  # a dtype change of the module does not change the output dtype
    assert module(torch.randn(2, 1000)).dtype == torch.float32


@pytest.mark.parametrize("kwargs, name", [
    (dict(sample_rate=0), "sample_rate"),
    (dict(sample_rate=-16000), "sample_rate"),
    (dict(n_fft=1), "n_fft"),
    (dict(n_fft=512.0), "n_fft"),
    (dict(n_mels=0), "n_mels"),
    (dict(f_max=8001.0), "f_max"),
    (dict(f_min=-1.0), "f_min"),
    (dict(f_min=4000.0, f_max=4000.0), "f_min"),
    (dict(f_min=9000.0), "f_min"),
    (dict(hop_length=0), "hop_length"),
    (dict(win_length=0), "win_length"),
    (dict(win_length=513), "win_length"),
    (dict(mel_scale="mel"), "mel_scale"),
    (dict(norm="area"), "norm"),
    (dict(power=0.0), "power"),
    (dict(log="log10"), "log"),
    (dict(eps=0.0), "eps"),
    (dict(center="yes"), "center"),
])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, name):
    kwargs = {"sample_rate": 16000, **kwargs}
    with pytest.raises(ValueError, match=name):
        LogMel(**kwargs)


def test_bad_inputs_and_filterbank_arguments():
    module = LogMel(16000, n_fft=256, n_mels=16)
    with pytest.raises(ValueError, match="N x L"):
        module(torch.randn(1000))
    with pytest.raises(ValueError, match="N x L"):
        module(torch.randn(2, 1, 1000))
    with pytest.raises(ValueError, match="n_mels"):
        mel_filterbank(16000, 512, 0)
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(16000, 512, 40, f_max=10000.0)
    with pytest.raises(ValueError, match="mel_scale"):
        hz_to_mel(100.0, "bark")
