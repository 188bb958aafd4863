"""``data.residency: stream``: the split stays on disk as image files, read and decoded by CPU worker processes
batch by batch, for data that does not fit in memory.

:class:`StreamLoader` is a :class:`~kdlab.data.loader.DeviceLoader` in everything but where the pixels come from:
the epoch's plan (sample order and augmentation views, a pure function of (seed, epoch)) is drawn by the same code,
each batch's stored samples are decoded by a ``torch.utils.data.DataLoader`` worker (persistent workers, pinned
memory, a few batches ahead), and the batch is moved to the device and augmented and normalised there by the same
code. A streamed run therefore sees the same inputs, in the same order, as the run with ``residency: device``, and
resumes exactly. Memory holds a few decoded batches per worker, never the split.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kdlab.data.files import ImageFiles
from kdlab.data.loader import DeviceLoader
from kdlab.errors import KdlabError

BATCHES_AHEAD = 4  # per worker


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


class _Batches(Dataset):
    """Item ``indices`` (an int64 array) is the stored samples of those split positions, N x H x W x C uint8."""

    def __init__(self, files: ImageFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, indices):
        try:
            return torch.from_numpy(self.files.decode(indices))
        except KdlabError as error:  # handed back as a value: DataLoader would re-raise it wrapped in a traceback
            return str(error)


class _Plan(Sampler):
    """Yields the index arrays of the current epoch's batches (set before each epoch by the loader)."""

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker decodes with Pillow; its torch needs no thread pool


class _Fetch:
    """``loader.images[index]`` of a streamed split: the stored samples at ``index`` decoded, on the device."""

    def __init__(self, files: ImageFiles, device: torch.device):
        self.files, self.device = files, device

    @property
    def shape(self) -> tuple[int, ...]:
        return self.files.shape

    def __getitem__(self, index) -> torch.Tensor:
        positions = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.arange(len(self.files))[index]
        return torch.from_numpy(self.files.decode(positions)).to(self.device)


class StreamLoader(DeviceLoader):
    """A :class:`~kdlab.data.loader.DeviceLoader` over a split of :class:`~kdlab.data.files.ImageFiles`, decoded by
    ``workers`` processes (0: in this process)."""

    def __init__(self, split, device, batch_size: int, *, workers: int | None = None, **kwargs):
        self.workers = default_workers() if workers is None else int(workers)
        super().__init__(split, device, batch_size, **kwargs)
        self._plan = _Plan()
        self._loader = None

    def _hold(self, images: ImageFiles) -> _Fetch:
        return _Fetch(images, self.device)

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            parallel = self.workers > 0
            self._loader = DataLoader(
                _Batches(self.images.files), batch_size=None, sampler=self._plan, num_workers=self.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=parallel,
                prefetch_factor=BATCHES_AHEAD if parallel else None, worker_init_fn=_worker_init if parallel else None)
        return self._loader

    def _raw_batches(self, order: torch.Tensor):
        cpu_order = order.cpu()
        parts = [self._rank_part(cpu_order[b * self.batch_size : (b + 1) * self.batch_size]) for b in range(len(self))]
        self._plan.batches = [part.numpy() for part in parts]
        for b, raw in enumerate(self._data_loader()):
            if isinstance(raw, str):
                raise KdlabError(raw)
            yield b, order[b * self.batch_size : (b + 1) * self.batch_size], raw.to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the worker processes (they also stop with the process)."""
        self._loader = None
