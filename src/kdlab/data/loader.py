"""The device loader: a whole split as one uint8 (images) or int16 (waveforms) tensor on the training device, cut
into batches there.

No worker processes, no per-sample Python: each epoch draws one permutation and one set of augmentation views for
the whole split from a generator seeded by (seed, epoch), so an epoch's batches are a pure function of the seed and
the epoch number. That is what lets a resumed run repeat the interrupted one exactly.

Images: crop x flip (:class:`~kdlab.data.augment.CropFlip`) or RandomResizedCrop
(:mod:`kdlab.data.resized_crop`, :mod:`kdlab.data.stored_views`), then per-channel normalisation, N x C x H x W;
un-augmented batches get the loader's ``fixed_view`` (the centre crop of a RandomResizedCrop run), if any. Audio:
int16 / 32768, time shift and gain on the waveform, log-mel features (:class:`~kdlab.data.audio_features.LogMel`)
computed on the device, normalisation by the scalar mean and std of the log-mel values, then SpecAugment masks
(filled with 0, the mean): N x 1 x n_mels x frames (:class:`~kdlab.data.audio_augment.AudioAugment`).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from kdlab.data.dataset import Split

PCM_SCALE = 1.0 / 32768.0  # int16 PCM to [-1, 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, epoch)."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def channel_stats(*splits: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the uint8 images N x H x W x C of all ``splits`` together, on
    the [0, 1] scale."""
    return stats_from_sums(sum(channel_sums(images) for images in splits))


def channel_sums(images: np.ndarray) -> np.ndarray:
    """[sum, sum of squares] per channel (2 x C, float64, [0, 1] scale) and the pixel count (column C) of uint8
    images N x H x W x C: partial sums that add up across chunks and ranks."""
    channels = images.shape[-1]
    out = np.zeros((2, channels + 1))
    flat = images.reshape(-1, channels)
    # Accumulate in chunks in float64 so a 50,000-image split needs no 1 GB temporary.
    for start in range(0, flat.shape[0], 1 << 22):
        chunk = flat[start : start + (1 << 22)].astype(np.float64) / 255.0
        out[0, :channels] += chunk.sum(0)
        out[1, :channels] += (chunk**2).sum(0)
    out[:, channels] = flat.shape[0]
    return out


def stats_from_sums(sums: np.ndarray) -> tuple[list[float], list[float]]:
    """(mean, std) per channel, rounded to 6 decimals, from :func:`channel_sums`."""
    count = sums[0, -1]
    mean = sums[0, :-1] / count
    std = np.sqrt(np.maximum(sums[1, :-1] / count - mean**2, 1e-12))
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def logmel_stats(features: torch.nn.Module, *splits: np.ndarray, device: torch.device | str = "cpu",
                 chunk: int = 256) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of every log-mel value of the int16 waveforms N x L of all ``splits`` together
    (one value each: the features have one channel), accumulated in float64."""
    total, total_sq, count = 0.0, 0.0, 0
    with torch.inference_mode():
        for waves in splits:
            for start in range(0, waves.shape[0], chunk):
                batch = torch.from_numpy(np.ascontiguousarray(waves[start : start + chunk])).to(device)
                values = features(batch.float() * PCM_SCALE).double()
                total += float(values.sum())
                total_sq += float((values**2).sum())
                count += values.numel()
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean**2, 1e-12))
    return [round(mean, 6)], [round(std, 6)]


class DeviceLoader:
    """Batches of (normalised float inputs N x C x H x W, int64 labels) from a split held on ``device``.

    ``augment`` runs on each whole batch on the device; ``mean`` and ``std`` are per channel on the [0, 1] scale.
    With ``channels_last`` the batches come out in channels_last memory order (free: the split is stored NHWC).
    A split of waveforms needs ``features`` (a :class:`~kdlab.data.audio_features.LogMel` on ``device``); its
    ``augment`` is an :class:`~kdlab.data.audio_augment.AudioAugment` and ``mean``/``std`` are one value each.

    Data-parallel (``distributed``, :mod:`kdlab.train.distributed`): a shuffled loader keeps the whole split and
    yields this rank's contiguous shard of every global batch (a last global batch with fewer samples than ranks is
    dropped, so every rank steps together); an ordered (evaluation) loader holds only this rank's contiguous shard of
    the split, and ``split_labels`` / ``groups`` / ``num_split_samples`` describe the whole split for gathering.
    """

    def __init__(
        self,
        split: Split,
        device: torch.device | str,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        drop_last: bool = False,
        augment=None,
        seed: int = 0,
        channels_last: bool = False,
        features: torch.nn.Module | None = None,
        distributed=None,
        fixed_view=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.distributed = distributed
        self.num_split_samples = len(split)
        self.split_labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64)).to(self.device)
        self.groups = None if split.groups is None else torch.from_numpy(split.groups).to(self.device)
        if distributed is not None and not shuffle:
            split = split.take(np.arange(len(split))[distributed.shard(len(split))])
        self.images = self._hold(split.images)
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64)).to(self.device)
        self.source_index = torch.from_numpy(np.asarray(split.source_index, dtype=np.int64)).to(self.device)
        self.is_audio = split.is_audio
        if self.is_audio and features is None:
            raise ValueError("a split of waveforms needs features (a LogMel module)")
        self.features = features
        channels = 1 if self.is_audio else self.images.shape[-1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(mean)} and {len(std)}")
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device)
        # x_norm = (x / 255 - mean) / std = x * scale + shift, folded into one multiply-add (audio: (x - mean) / std
        # on the log-mel values).
        self._scale = (1.0 / ((1.0 if self.is_audio else 255.0) * std_t)).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(mean, dtype=torch.float32, device=self.device) / std_t).view(1, -1, 1, 1)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment if augment is not None and not augment.is_identity else None
        self.seed = seed
        self.channels_last = channels_last
        self.fixed_view = fixed_view

    def _hold(self, images: np.ndarray):
        """The split's samples as this loader keeps them: the whole array, on the device."""
        return torch.from_numpy(np.ascontiguousarray(images)).to(self.device)

    def _raw_batches(self, order: torch.Tensor, start: int = 0):
        """(index, stored samples of those indices) for each of the epoch's batches from batch ``start`` on, in
        ``order``; this rank's shard of each global batch in a data-parallel run."""
        for b in range(start, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield b, index, self.images[self._rank_part(index)]

    def _rank_part(self, index: torch.Tensor) -> torch.Tensor:
        if self.distributed is not None and self.shuffle:
            return index[self.distributed.shard(len(index))]
        return index

    def __len__(self) -> int:
        n = self.labels.shape[0]
        if self.drop_last:
            return n // self.batch_size
        if self.distributed is not None and self.shuffle and n % self.batch_size and \
                n % self.batch_size < self.distributed.world:
            return n // self.batch_size  # a last batch smaller than the number of ranks is dropped
        return math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return self.labels.shape[0]

    def epoch_plan(self, epoch: int) -> tuple:
        """The epoch's sample order and augmentation views (both on the device), a pure function of (seed, epoch)."""
        n = self.num_samples
        generator = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.augment is None:
            views = None
        elif self.is_audio:
            length = self.images.shape[1]
            views = self.augment.sample(n, generator, length, self.features.n_mels, self.features.frames(length))
            views = views.to(self.device)
        else:
            views = self.augment.sample(n, generator, image_size=tuple(self.images.shape[1:3]),
                                        samples=self.source_index[order.to(self.device)])
            views = views.to(self.device)
        return order.to(self.device), views

    @property
    def discrete_views(self) -> bool:
        """Whether every input is one of finitely many named views of a sample (no augmentation, crop x flip, or
        stored views), so that anything computed from an input can be cached under (sample, view)."""
        return self.augment is None or getattr(self.augment, "discrete", False)

    @property
    def num_views(self) -> int:
        return 1 if self.augment is None else self.augment.num_views

    def batches(self, epoch: int = 0, with_keys: bool = False, start: int = 0) -> Iterator[tuple]:
        """Yield the epoch's (inputs, labels) batches; with ``with_keys``, (inputs, labels, keys) where ``keys`` is
        (sample ``source_index``, view index), both int64 on the device. The view index is -1 under an augmentation
        whose views are not discrete (the sample keys still name the samples, for per-sample method state).
        ``start`` skips the epoch's first batches (a mid-epoch resume): the plan is a pure function of (seed, epoch),
        so the batches that follow are the ones an uninterrupted epoch would see."""
        order, views = self.epoch_plan(epoch)
        for b, index, raw in self._raw_batches(order, start):
            batch_views = views[b * self.batch_size : (b + 1) * self.batch_size] if views is not None else None
            if self.distributed is not None and self.shuffle:  # this rank's shard of the global batch
                shard = self.distributed.shard(len(index))
                index = index[shard]
                batch_views = batch_views[shard] if batch_views is not None else None
            inputs = self.inputs(raw, batch_views)
            if not with_keys:
                yield inputs, self.labels[index]
                continue
            if batch_views is None:
                view = torch.zeros_like(index)
            elif self.discrete_views:
                view = self.augment.view_index(batch_views)
            else:
                view = torch.full_like(index, -1)
            yield inputs, self.labels[index], (self.source_index[index], view)

    __iter__ = batches

    def inputs(self, raw: torch.Tensor, views=None) -> torch.Tensor:
        """The model inputs of a batch of stored samples (uint8 NHWC images or int16 N x L waveforms), with the
        augmentation ``views`` of that batch applied (None: none)."""
        if not self.is_audio:
            if views is not None:
                raw = self.augment.apply(raw, views)
            elif self.fixed_view is not None:
                raw = self.fixed_view.apply(raw)
            return self.normalise(raw)
        wave = raw.float() * PCM_SCALE
        if views is not None:
            wave = self.augment.apply_waveform(wave, views)
        spectrogram = self.features(wave).mul_(self._scale).add_(self._shift)
        if views is not None:
            spectrogram = self.augment.apply_spectrogram(spectrogram, views)
        return spectrogram.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def normalise(self, images_nhwc: torch.Tensor) -> torch.Tensor:
        """uint8 (or float, on the 0-255 scale) N x H x W x C to normalised float32 N x C x H x W (channels_last memory if asked); images only."""
        x = images_nhwc.permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return x.float().mul_(self._scale).add_(self._shift)
