"""How a recipe's data section turns stored samples into model inputs: the loaders of a run, for images and audio.

Images: the training loader crops and flips (``data.crop_padding``, ``data.padding_mode``, ``data.flip``, or
``data.random_resized_crop``, whose centre crop every loader applies to un-augmented inputs) and every loader
normalises per channel with ``data.mean`` / ``data.std``. Audio: every loader computes log-mel features
(``data.features``) on the device and normalises them with the scalar ``data.mean`` / ``data.std`` of the log-mel
values; the training loader also augments (``data.audio_augment``: time shift, gain, SpecAugment). ``fill_statistics``
computes whatever the recipe leaves open (mean, std, the default features) from the training data, so the run's
``config.yaml`` records the exact input pipeline.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from kdlab.config import DataConfig, LogMelConfig
from kdlab.data import load_dataset
from kdlab.data.augment import CropFlip
from kdlab.data.dataset import Dataset, Split
from kdlab.data.noise import LabelNoise
from kdlab.data.loader import DeviceLoader, channel_stats, channel_sums, logmel_stats, stats_from_sums
from kdlab.errors import KdlabError


def recipe_dataset(data: DataConfig, seed: int, device: torch.device | str = "cpu") -> Dataset:
    """The dataset a recipe's data section names: its source and options, training subset, label noise and the
    validation split of run seed ``seed``; decoded whole or streamed as ``data.residency`` says (auto: by the free
    memory of ``device``)."""
    noise = LabelNoise(**data.label_noise.model_dump()) if data.label_noise is not None else None
    budget = int(data.memory_fraction * free_memory(torch.device(device))) if data.residency == "auto" else None
    return load_dataset(data.source, data.path, val_size=data.val_size, train_size=data.train_size, seed=seed,
                        cache_dir=data.cache_dir, label_noise=noise, residency=data.residency,
                        memory_budget=budget, **data.options)


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_modality(data: DataConfig, dataset: Dataset) -> None:
    """Image augmentation on audio, or audio settings on images, is a user error naming the keys."""
    if dataset.is_audio:
        image_keys = [key for key, value in (("crop_padding", data.crop_padding), ("flip", data.flip),
                                             ("random_resized_crop", data.random_resized_crop)) if value]
        if image_keys:
            raise KdlabError(f"data.{image_keys[0]}: {dataset.name} is audio; crop and flip are image augmentations "
                             f"(use data.audio_augment: time_shift, gain_db, freq_masks, time_masks)")
    else:
        audio_keys = [key for key in ("features", "audio_augment") if getattr(data, key) is not None]
        if audio_keys:
            raise KdlabError(f"data.{audio_keys[0]}: {dataset.name} is images, not audio; remove it")


def log_mel(data: DataConfig, dataset: Dataset, device: torch.device | str = "cpu"):
    """The :class:`~kdlab.data.audio_features.LogMel` of an audio dataset (None for images), on ``device``."""
    if not dataset.is_audio:
        return None
    from kdlab.data.audio_features import LogMel

    config = data.features or LogMelConfig()
    try:
        return LogMel(dataset.sample_rate, **config.model_dump()).to(device)
    except ValueError as error:
        raise KdlabError(f"data.features: {error} (sample rate {dataset.sample_rate} Hz)") from None


def fill_statistics(data: DataConfig, dataset: Dataset, device: torch.device | str = "cpu",
                    distributed=None) -> None:
    """Fill ``data.mean`` / ``data.std`` from train + val (and, for audio, ``data.features`` with its defaults).
    Streamed images are read in chunks, each rank of a data-parallel run reading its share (the sums are
    all-reduced), so no process decodes the split at once."""
    check_modality(data, dataset)
    if dataset.is_audio:
        # Spell out the defaults that depend on the data (hop n_fft / 4, f_max half the sample rate), so the run
        # records the exact features and two spellings of one setting compare equal.
        features = data.features or LogMelConfig()
        data.features = features.model_copy(update={
            "hop_length": features.hop_length or features.n_fft // 4,
            "f_max": features.f_max if features.f_max is not None else dataset.sample_rate / 2})
    if data.mean is not None and data.std is not None:
        return
    splits = [split.images for split in (dataset.train, dataset.val) if split is not None]
    # Over train and val together: the whole training set, so the statistics (and everything keyed by them, like
    # teacher-logit caches) do not depend on which validation split the seed carved.
    if dataset.is_audio:
        mean, std = logmel_stats(log_mel(data, dataset, device), *splits, device=device)
    elif dataset.streamed:
        mean, std = streamed_stats(splits, device, distributed)
    else:
        mean, std = channel_stats(*splits)
    data.mean = data.mean or mean
    data.std = data.std or std


STATS_IMAGES = 100_000
STATS_CHUNK = 256


def stream_stats_positions(count: int) -> np.ndarray:
    """The images the statistics of a streamed split of ``count`` are computed from: all up to ``STATS_IMAGES``,
    else that many evenly spaced ones (so a split of 50,000 gets the statistics its decoded copy would)."""
    if count > STATS_IMAGES:
        return np.linspace(0, count - 1, STATS_IMAGES).astype(np.int64)
    return np.arange(count)


def streamed_stats(splits, device, distributed=None) -> tuple[list[float], list[float]]:
    """Channel statistics of streamed image splits, decoded ``STATS_CHUNK`` images at a time (this rank's share of
    them under torchrun), with a progress bar."""
    from tqdm import tqdm

    jobs = []
    for files in splits:
        positions = stream_stats_positions(len(files))
        if distributed is not None:
            positions = positions[distributed.shard(len(positions))]
        jobs.append((files, positions))
    sums = np.zeros((2, splits[0].shape[-1] + 1))
    bar = tqdm(total=sum(len(p) for _, p in jobs), unit="img", desc="input statistics", leave=False,
               disable=None, file=sys.stderr)
    for files, positions in jobs:
        for start in range(0, len(positions), STATS_CHUNK):
            chunk = positions[start : start + STATS_CHUNK]
            sums += channel_sums(files[chunk].decode())
            bar.update(len(chunk))
    bar.close()
    if distributed is not None:
        total = torch.from_numpy(sums).to(device)
        sums = distributed.all_reduce_sum(total).cpu().numpy()
    return stats_from_sums(sums)


def train_augment(data: DataConfig, dataset: Dataset):
    """The training augmentation: crop x flip or RandomResizedCrop (fresh or stored views) for images,
    :class:`AudioAugment` for audio (None: none)."""
    check_modality(data, dataset)
    rrc = data.random_resized_crop
    if not dataset.is_audio and rrc is not None:
        from kdlab.data.resized_crop import RandomResizedCrop
        from kdlab.data.stored_views import StoredViews

        crop = RandomResizedCrop(rrc.size, tuple(rrc.scale), tuple(rrc.ratio), data.flip)
        return crop if rrc.stored_views is None else StoredViews(crop, rrc.stored_views, rrc.views_seed)
    if not dataset.is_audio:
        return CropFlip(data.crop_padding, data.padding_mode, data.flip)
    if data.audio_augment is None:
        return None
    from kdlab.data.audio_augment import AudioAugment

    try:
        return AudioAugment(**data.audio_augment.model_dump())
    except ValueError as error:
        raise KdlabError(f"data.audio_augment: {error}") from None


def eval_view(data: DataConfig, image_shape: tuple[int, ...] | None):
    """The fixed view of un-augmented images H x W x C (None: audio): the centre crop of a RandomResizedCrop run,
    or None."""
    rrc = data.random_resized_crop
    if image_shape is None or rrc is None:
        return None
    from kdlab.data.resized_crop import CentreCrop

    stored_side = min(image_shape[:2])
    return CentreCrop(rrc.size, rrc.eval_crop if rrc.eval_crop is not None else min(1.0, rrc.size / stored_side))


def make_loader(split: Split, data: DataConfig, dataset: Dataset, device: torch.device, batch_size: int, *,
                train: bool = False, seed: int = 0, drop_last: bool = False, channels_last: bool = False,
                features: torch.nn.Module | None = None, distributed=None) -> DeviceLoader:
    """A loader of ``split`` as the recipe's data section says: shuffled and augmented with ``train``, else in order
    and un-augmented. ``features`` may pass one shared LogMel module (built here if None); ``distributed`` shards it
    for a data-parallel run (:class:`~kdlab.data.loader.DeviceLoader`)."""
    channels = 1 if dataset.is_audio else dataset.image_shape[-1]
    if len(data.mean or ()) != channels or len(data.std or ()) != channels:
        raise KdlabError(f"data.mean and data.std need {channels} value(s) for {dataset.name}, got "
                         f"{len(data.mean or ())} and {len(data.std or ())}")
    if dataset.is_audio and features is None:
        features = log_mel(data, dataset, device)
    if dataset.streamed:
        from kdlab.data.stream import StreamLoader

        return StreamLoader(split, device, batch_size, workers=data.stream_workers, mean=data.mean, std=data.std,
                            shuffle=train, drop_last=train and drop_last,
                            augment=train_augment(data, dataset) if train else None, seed=seed,
                            channels_last=channels_last, features=features, distributed=distributed,
                            fixed_view=eval_view(data, None if dataset.is_audio else dataset.image_shape))
    return DeviceLoader(split, device, batch_size, mean=data.mean, std=data.std, shuffle=train,
                        drop_last=train and drop_last, augment=train_augment(data, dataset) if train else None,
                        seed=seed, channels_last=channels_last, features=features, distributed=distributed,
                        fixed_view=eval_view(data, None if dataset.is_audio else dataset.image_shape))


def model_input_shape(data: DataConfig, dataset: Dataset) -> tuple[int, int, int]:
    """(C, H, W) of the model inputs: (C, H, W) of the images, or (1, n_mels, frames) for audio."""
    if not dataset.is_audio:
        h, w, c = dataset.image_shape
        if data.random_resized_crop is not None:
            return int(c), data.random_resized_crop.size, data.random_resized_crop.size
        return int(c), int(h), int(w)
    features = log_mel(data, dataset)
    return 1, int(features.n_mels), int(features.frames(dataset.image_shape[0]))


def probe_inputs(loader: DeviceLoader, count: int = 2) -> torch.Tensor:
    """The model inputs of the first ``count`` samples of ``loader``'s split, un-augmented, on the CPU."""
    with torch.inference_mode():
        return loader.inputs(loader.images[:count]).float().cpu().contiguous()


def features_record(data: DataConfig, dataset: Dataset) -> dict | None:
    """What a model trained on these inputs depends on beyond the waveform (sample rate + features), or None for
    images: teachers and evaluations on other data must match it."""
    if not dataset.is_audio:
        return None
    return {"sample_rate": dataset.sample_rate, **(data.features or LogMelConfig()).model_dump()}
