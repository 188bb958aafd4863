"""``data.residency: stream``: the split stays on disk as image files, read and decoded by CPU worker processes
batch by batch, for data that does not fit in memory.

:class:`StreamLoader` is a :class:`~kdlab.data.loader.DeviceLoader` in everything but where the pixels come from:
the epoch's plan (sample order and augmentation views, a pure function of (seed, epoch)) is drawn by the same code,
each batch's stored samples are decoded by a ``torch.utils.data.DataLoader`` worker (persistent workers, pinned
memory, a few batches ahead), and the batch is moved to the device and augmented and normalised there by the same
code. A streamed run therefore sees the same inputs, in the same order, as the run with ``residency: device``, and
resumes exactly. Memory holds a few decoded batches per worker, never the split.

Every streamed split of a process shares one :class:`DecodePool` per worker count: the training, validation and
test loaders take turns on the same worker processes, so a run holds ``workers`` decoders, not one set per split
(each worker is a copy of the interpreter with torch loaded, a few hundred MB of resident memory).
"""

from __future__ import annotations

import itertools
import os
import weakref

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
    """Item ``(key, indices)`` is the stored samples at split positions ``indices`` (an int64 array) of the split
    registered under ``key``, N x H x W x C uint8."""

    def __init__(self, files: dict[int, ImageFiles]):
        self.files = files

    def __len__(self) -> int:
        return sum(len(files) for files in self.files.values())

    def __getitem__(self, item):
        key, indices = item
        try:
            return torch.from_numpy(self.files[key].decode(indices))
        except KdlabError as error:  # handed back as a value: DataLoader would re-raise it wrapped in a traceback
            return str(error)


class _Plan(Sampler):
    """Yields the ``(key, indices)`` items of the batches asked for next (set before each pass)."""

    def __init__(self):
        self.batches: list[tuple[int, np.ndarray]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker decodes with Pillow; its torch needs no thread pool


class DecodePool:
    """``workers`` decoding processes (0: decode in this process) shared by every split registered with it. Workers
    are started on the first pass and kept; a split registered after they started restarts them on the next pass
    (a worker holds a copy of the registered file lists, taken when it starts)."""

    def __init__(self, workers: int, pin_memory: bool = False):
        self.workers, self.pin_memory = int(workers), bool(pin_memory)
        self._files: dict[int, ImageFiles] = {}
        self._keys = itertools.count()
        self._plan = _Plan()
        self._loader = None

    def register(self, files: ImageFiles) -> int:
        """The key of ``files`` in this pool (forgotten again when the caller drops the returned handle)."""
        key = next(self._keys)
        self._files[key] = files
        self._loader = None
        return key

    def forget(self, key: int) -> None:
        self._files.pop(key, None)

    def batches(self, key: int, parts: list[np.ndarray]):
        """The decoded batches (N x H x W x C uint8 tensors, or an error line) of ``parts`` of split ``key``."""
        if self._loader is None:
            parallel = self.workers > 0
            self._loader = DataLoader(
                _Batches(dict(self._files)), batch_size=None, sampler=self._plan, num_workers=self.workers,
                pin_memory=self.pin_memory, persistent_workers=parallel,
                prefetch_factor=BATCHES_AHEAD if parallel else None, worker_init_fn=_worker_init if parallel else None)
        self._plan.batches = [(key, part) for part in parts]
        return iter(self._loader)

    def close(self) -> None:
        """Stop the worker processes (they also stop with the process)."""
        self._loader = None


_POOLS: dict[tuple[int, bool], DecodePool] = {}


def decode_pool(workers: int, pin_memory: bool = False) -> DecodePool:
    """This process's shared pool of ``workers`` decoders (into pinned memory with ``pin_memory``)."""
    key = (int(workers), bool(pin_memory))
    if key not in _POOLS:
        _POOLS[key] = DecodePool(*key)
    return _POOLS[key]


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
        self._pool = decode_pool(self.workers, pin_memory=self.device.type == "cuda")
        self._key = self._pool.register(self.images.files)
        weakref.finalize(self, self._pool.forget, self._key)

    def _hold(self, images: ImageFiles) -> _Fetch:
        return _Fetch(images, self.device)

    def _raw_batches(self, order: torch.Tensor, start: int = 0):
        cpu_order = order.cpu()
        parts = [self._rank_part(cpu_order[b * self.batch_size : (b + 1) * self.batch_size]).numpy()
                 for b in range(start, len(self))]
        for b, raw in enumerate(self._pool.batches(self._key, parts), start=start):
            if isinstance(raw, str):
                raise KdlabError(raw)
            yield b, order[b * self.batch_size : (b + 1) * self.batch_size], raw.to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the shared decoding workers (they also stop with the process; the next pass starts them again)."""
        self._pool.close()
