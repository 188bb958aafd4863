"""Audio augmentation: reproducible sampling, identity, shifts against NumPy, gain bounds, SpecAugment masks,
slicing, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.data.audio_augment import AudioAugment, AudioParams

LENGTH, N_MELS, FRAMES = 1000, 40, 63
FULL = AudioAugment(time_shift=0.2, gain_db=6.0, freq_masks=2, freq_mask_width=8, time_masks=3, time_mask_width=10)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sample(augment: AudioAugment, n: int, seed: int = 0) -> AudioParams:
    return augment.sample(n, generator(seed), LENGTH, N_MELS, FRAMES)


def assert_params_equal(a: AudioParams, b: AudioParams) -> None:
    for name in AudioParams.TENSOR_FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.length, a.n_mels, a.frames) == (b.length, b.n_mels, b.frames)


def test_same_seed_same_params_and_outputs():
    wave, spec = torch.randn(16, LENGTH), torch.randn(16, 1, N_MELS, FRAMES)
    a, b = sample(FULL, 16, seed=3), sample(FULL, 16, seed=3)
    assert_params_equal(a, b)
    assert torch.equal(FULL.apply_waveform(wave, a), FULL.apply_waveform(wave, b))
    assert torch.equal(FULL.apply_spectrogram(spec, a), FULL.apply_spectrogram(spec, b))
    other = sample(FULL, 16, seed=4)
    assert not torch.equal(a.shift, other.shift) and not torch.equal(a.gain_db, other.gain_db)


def test_param_shapes_dtypes_and_device():
    params = sample(FULL, 5)
    assert params.shift.shape == (5,) and params.shift.dtype == torch.int64
    assert params.gain_db.shape == (5,) and params.gain_db.dtype == torch.float32
    assert params.freq_start.shape == params.freq_width.shape == (5, 2)
    assert params.time_start.shape == params.time_width.shape == (5, 3)
    assert len(params) == 5 and params.shift.device.type == "cpu"
    assert (params.length, params.n_mels, params.frames) == (LENGTH, N_MELS, FRAMES)
    assert not FULL.discrete and not AudioAugment.discrete


def test_identity_when_all_zero():
    augment = AudioAugment()
    assert augment.is_identity
    assert AudioAugment(freq_masks=3, time_mask_width=5).is_identity  # masks of width 0, or no masks
    assert not AudioAugment(gain_db=1.0).is_identity and not AudioAugment(time_shift=0.1).is_identity
    assert not AudioAugment(time_masks=1, time_mask_width=1).is_identity
    wave, spec = torch.randn(4, LENGTH), torch.randn(4, 1, N_MELS, FRAMES)
    params = sample(augment, 4)
    assert torch.equal(params.shift, torch.zeros(4, dtype=torch.int64))
    assert torch.equal(params.gain_db, torch.zeros(4))
    assert torch.equal(augment.apply_waveform(wave, params), wave)
    assert torch.equal(augment.apply_spectrogram(spec, params), spec)


def numpy_shift(row: np.ndarray, s: int) -> np.ndarray:
    out = np.zeros_like(row)
    for t in range(len(row)):
        if 0 <= t - s < len(row):
            out[t] = row[t - s]
    return out


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.9])
def test_shifts_are_zero_filled_and_within_bounds(fraction):
    augment = AudioAugment(time_shift=fraction)
    n, length = 64, 200
    params = augment.sample(n, generator(1), length, N_MELS, FRAMES)
    bound = int(fraction * length)
    assert params.shift.abs().max() <= bound
    assert params.shift.min() < 0 < params.shift.max()  # both directions occur
    ramp = torch.arange(1, length + 1, dtype=torch.float32).repeat(n, 1)  # no zeros: a fill is visible
    out = augment.apply_waveform(ramp, params)
    assert out.shape == ramp.shape and out.dtype == ramp.dtype
    for i in range(n):
        s = int(params.shift[i])
        np.testing.assert_array_equal(out[i].numpy(), numpy_shift(ramp[i].numpy(), s))
        assert int((out[i] == 0).sum()) == abs(s)  # not circular: exactly |s| zeros come in


def test_shift_distribution_covers_the_range():
    augment = AudioAugment(time_shift=0.01)  # S = 10 samples for 1000
    params = augment.sample(20_000, generator(2), LENGTH, N_MELS, FRAMES)
    counts = torch.bincount(params.shift + 10, minlength=21)
    assert counts.numel() == 21 and counts.min() > 0.8 * 20_000 / 21  # every value in [-10, 10], about uniformly


def test_gains_within_bounds_in_db():
    augment = AudioAugment(gain_db=6.0)
    params = augment.sample(500, generator(5), LENGTH, N_MELS, FRAMES)
    assert params.gain_db.abs().max() <= 6.0 and params.gain_db.min() < -5.0 and params.gain_db.max() > 5.0
    wave = torch.randn(500, LENGTH)
    out = augment.apply_waveform(wave, params)
    measured_db = 20 * torch.log10(out.norm(dim=1) / wave.norm(dim=1))
    torch.testing.assert_close(measured_db, params.gain_db, rtol=0, atol=1e-4)
    assert measured_db.abs().max() <= 6.0 + 1e-4


def numpy_covered(start: np.ndarray, width: np.ndarray, size: int) -> np.ndarray:
    covered = np.zeros(size, dtype=bool)
    for s, w in zip(start, width):
        covered[s:s + w] = True
    return covered


@pytest.mark.parametrize("fill", [0.0, -3.5])
def test_masks_set_fill_within_count_and_width_bounds(fill):
    n = 32
    params = sample(FULL, n, seed=7)
    spec = torch.randn(n, 1, N_MELS, FRAMES) + 10.0  # no cell equals a fill by chance
    out = FULL.apply_spectrogram(spec, params, fill=fill)
    assert out.shape == spec.shape
    assert ((params.freq_width >= 0) & (params.freq_width <= 8)).all()
    assert ((params.time_width >= 0) & (params.time_width <= 10)).all()
    assert (params.freq_start >= 0).all() and (params.freq_start + params.freq_width <= N_MELS).all()
    assert (params.time_start >= 0).all() and (params.time_start + params.time_width <= FRAMES).all()
    for i in range(n):
        rows = numpy_covered(params.freq_start[i].numpy(), params.freq_width[i].numpy(), N_MELS)
        cols = numpy_covered(params.time_start[i].numpy(), params.time_width[i].numpy(), FRAMES)
        expected_mask = rows[:, None] | cols[None, :]
        got_mask = (out[i, 0] == fill).numpy()
        np.testing.assert_array_equal(got_mask, expected_mask)
        np.testing.assert_array_equal(out[i, 0].numpy()[~expected_mask], spec[i, 0].numpy()[~expected_mask])
        assert rows.sum() <= 2 * 8 and cols.sum() <= 3 * 10
        assert _runs(rows) <= 2 and _runs(cols) <= 3  # at most freq_masks / time_masks masked bands
    masks = (out[:, 0] == fill).flatten(1)
    assert len({tuple(m.tolist()) for m in masks}) == n  # every sample has its own masks


def _runs(covered: np.ndarray) -> int:
    return int(np.sum(covered[1:] & ~covered[:-1]) + covered[0])


def test_mask_widths_cover_zero_to_the_maximum():
    augment = AudioAugment(freq_masks=1, freq_mask_width=5, time_masks=1, time_mask_width=70)
    params = augment.sample(5000, generator(8), LENGTH, N_MELS, FRAMES)
    assert set(params.freq_width[:, 0].tolist()) == set(range(6))
    assert params.time_width.max() == FRAMES  # the width is capped at the number of frames
    assert set(params.freq_start[:, 0].tolist()) == set(range(N_MELS + 1))  # start in [0, F - w]: 40 for width 0


def test_masks_reach_every_channel():
    params = sample(FULL, 4, seed=9)
    spec = torch.randn(4, 3, N_MELS, FRAMES) + 10.0
    out = FULL.apply_spectrogram(spec, params)
    assert torch.equal(out[:, 0] == 0, out[:, 1] == 0) and torch.equal(out[:, 0] == 0, out[:, 2] == 0)


def test_slicing_params_equals_sampling_then_slicing():
    n = 20
    params = sample(FULL, n, seed=11)
    wave, spec = torch.randn(n, LENGTH), torch.randn(n, 1, N_MELS, FRAMES)
    whole_wave = FULL.apply_waveform(wave, params)
    whole_spec = FULL.apply_spectrogram(spec, params)
    for start in range(0, n, 6):
        batch = slice(start, start + 6)
        part = params[batch]
        assert len(part) == len(range(n)[batch])
        for name in AudioParams.TENSOR_FIELDS:
            assert torch.equal(getattr(part, name), getattr(params, name)[batch])
        assert torch.equal(FULL.apply_waveform(wave[batch], part), whole_wave[batch])
        assert torch.equal(FULL.apply_spectrogram(spec[batch], part), whole_spec[batch])
    index = torch.tensor([3, 0, 17])
    assert torch.equal(FULL.apply_waveform(wave[index], params[index]), whole_wave[index])
    assert len(params[5]) == 1 and len(params[-1]) == 1 and torch.equal(params[-1].shift, params.shift[-1:])


def test_a_batch_of_one():
    params = sample(FULL, 1, seed=12)
    wave, spec = torch.randn(1, LENGTH), torch.randn(1, 1, N_MELS, FRAMES)
    assert FULL.apply_waveform(wave, params).shape == (1, LENGTH)
    assert FULL.apply_spectrogram(spec, params).shape == (1, 1, N_MELS, FRAMES)
    assert len(sample(FULL, 0)) == 0


def test_waveform_dtype_and_gradient_are_kept():
    params = sample(FULL, 3)
    wave = torch.randn(3, LENGTH, dtype=torch.float64, requires_grad=True)
    out = FULL.apply_waveform(wave, params)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert wave.grad is not None
    assert FULL.apply_waveform(wave.detach().bfloat16(), params).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_given_the_same_params():
    params = sample(FULL, 8)
    wave, spec = torch.randn(8, LENGTH), torch.randn(8, 1, N_MELS, FRAMES)
    on_gpu = params.to("cuda")
    torch.testing.assert_close(FULL.apply_waveform(wave.cuda(), on_gpu).cpu(), FULL.apply_waveform(wave, params))
    assert torch.equal(FULL.apply_spectrogram(spec.cuda(), on_gpu).cpu(), FULL.apply_spectrogram(spec, params))
    gpu_params = FULL.sample(8, torch.Generator("cuda").manual_seed(0), LENGTH, N_MELS, FRAMES)
    assert gpu_params.shift.device.type == "cuda"


@pytest.mark.parametrize("kwargs, name", [
    (dict(time_shift=-0.1), "time_shift"),
    (dict(time_shift=1.0), "time_shift"),
    (dict(time_shift=float("nan")), "time_shift"),
    (dict(gain_db=-1.0), "gain_db"),
    (dict(gain_db=float("inf")), "gain_db"),
    (dict(freq_masks=-1), "freq_masks"),
    (dict(freq_mask_width=-2), "freq_mask_width"),
    (dict(time_masks=-1), "time_masks"),
    (dict(time_mask_width=-1), "time_mask_width"),
    (dict(time_masks=1.5), "time_masks"),
])
def test_bad_fields_raise_value_errors_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AudioAugment(**kwargs)


def test_mismatched_inputs_raise_value_errors():
    params = sample(FULL, 4)
    with pytest.raises(ValueError, match="3 samples.*got 4"):
        FULL.apply_waveform(torch.randn(3, LENGTH), params)
    with pytest.raises(ValueError, match="length"):
        FULL.apply_waveform(torch.randn(4, LENGTH + 1), params)
    with pytest.raises(ValueError, match="N x L"):
        FULL.apply_waveform(torch.randn(4, 1, LENGTH), params)
    with pytest.raises(ValueError, match="sampled for"):
        FULL.apply_spectrogram(torch.randn(4, 1, N_MELS, FRAMES + 1), params)
    with pytest.raises(ValueError, match="N x C x F x T"):
        FULL.apply_spectrogram(torch.randn(4, N_MELS, FRAMES), params)
    with pytest.raises(ValueError, match="n_mels"):
        FULL.sample(4, generator(), LENGTH, 0, FRAMES)
    with pytest.raises(ValueError, match="length"):
        FULL.sample(4, generator(), 0, N_MELS, FRAMES)
