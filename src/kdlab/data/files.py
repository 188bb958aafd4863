"""Image files that stand in for a decoded split: what ``data.residency: stream`` trains from.

:class:`ImageFiles` looks like the uint8 N x H x W x C array a source would decode (``shape``, ``dtype``, ``ndim``,
``len``), so a :class:`~kdlab.data.dataset.Split` can hold it and every split operation (training subset, label
noise, validation split) works unchanged; indexing it with positions gives another ``ImageFiles`` (nothing is
read), and :meth:`ImageFiles.decode` reads and decodes the chosen files. A file is decoded by the same code as the
in-memory path (:func:`kdlab.data.sources.image_files.decode`), so a streamed image has the very pixels of the
decoded split: a streamed run sees the same inputs as the same run with ``residency: device``.

Paths are kept as one NumPy byte-string array (no per-file Python objects), so DataLoader workers share them without
copy-on-access growth of their memory. :class:`TarMembers` is the same for images stored inside uncompressed tar
shards (WebDataset): each sample is a (shard, byte offset, length), read with one seek. Subclasses only say how
to read a sample's encoded bytes (:meth:`ImageFiles.read`) and how to pick a subset (:meth:`ImageFiles.take`).
"""

from __future__ import annotations

import os

import numpy as np

from kdlab.data.sources.image_files import CHANNELS, decode
from kdlab.errors import KdlabError


class ImageFiles:
    """``len(paths)`` image files decoded in ``mode`` ("RGB" or "L"), each ``height`` x ``width`` (resized to it
    first when ``size`` is set: shorter side to ``size``, centre crop; else every file must have that size)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths, height: int, width: int, mode: str = "RGB", size: int | None = None):
        self.paths = paths if isinstance(paths, np.ndarray) else np.array([os.fsencode(p) for p in paths])
        self.height, self.width, self.mode, self.size = int(height), int(width), mode, size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.height, self.width, CHANNELS[self.mode])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> "ImageFiles":
        rows = np.arange(len(self))[index]
        return self.take(rows.reshape(-1) if np.ndim(rows) == 0 else rows)

    def take(self, rows: np.ndarray) -> "ImageFiles":
        """The samples at positions ``rows`` (an int array), nothing read."""
        return ImageFiles(self.paths[rows], self.height, self.width, self.mode, self.size)

    def read(self, position: int) -> tuple[str, bytes]:
        """(the name errors give it, the encoded bytes) of sample ``position``."""
        path = os.fsdecode(self.paths[position])
        try:
            with open(path, "rb") as handle:
                return path, handle.read()
        except OSError as error:
            raise KdlabError(f"{path}: cannot read image file: {error.strerror or error}") from None

    def decode_one(self, position: int) -> np.ndarray:
        """The pixels of sample ``position`` as H x W x C uint8; a sample that will not decode, or has another size,
        is a one-line error naming it."""
        path, blob = self.read(position)
        pixels = decode(path, blob, self.mode)
        if self.size is not None:
            pixels = fit(pixels, self.size)
        if pixels.shape[:2] != (self.height, self.width):
            raise KdlabError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} pixels, the others "
                             f"{self.width}x{self.height}; all images must have one size (or set the option size)")
        return pixels.reshape(self.height, self.width, -1)

    def decode(self, positions=None) -> np.ndarray:
        """The files at ``positions`` (all when None) decoded into one N x H x W x C uint8 array."""
        positions = range(len(self)) if positions is None else np.asarray(positions).reshape(-1)
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.uint8)
        for row, position in enumerate(positions):
            out[row] = self.decode_one(int(position))
        return out

    @property
    def decoded_bytes(self) -> int:
        """What the split would take decoded in memory."""
        return int(np.prod(self.shape, dtype=np.int64))


class TarMembers(ImageFiles):
    """Images stored as members of uncompressed tar files: sample i is ``spans[i] = (offset, length)`` bytes of
    tar ``paths[i]``, named ``members[i]`` in errors."""

    def __init__(self, paths, spans: np.ndarray, members, height: int, width: int, mode: str = "RGB",
                 size: int | None = None):
        super().__init__(paths, height, width, mode, size)
        self.spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        self.members = members if isinstance(members, np.ndarray) else np.array([os.fsencode(m) for m in members])

    def take(self, rows: np.ndarray) -> "TarMembers":
        return TarMembers(self.paths[rows], self.spans[rows], self.members[rows], self.height, self.width, self.mode,
                          self.size)

    def read(self, position: int) -> tuple[str, bytes]:
        shard, (offset, length) = os.fsdecode(self.paths[position]), self.spans[position]
        name = f"{shard}:{os.fsdecode(self.members[position])}"
        try:
            with open(shard, "rb") as handle:
                handle.seek(int(offset))
                blob = handle.read(int(length))
        except OSError as error:
            raise KdlabError(f"{name}: cannot read shard: {error.strerror or error}") from None
        if len(blob) != length:
            raise KdlabError(f"{name}: the shard is truncated (corrupt or still being written)")
        return name, blob


def fit(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` (H x W or H x W x 3) with the shorter side resized to ``size`` (bilinear, antialiased by
    Pillow) and the centre ``size`` x ``size`` cut out: the usual fixed-size preparation of a folder of photos."""
    from PIL import Image, ImageOps

    image = Image.fromarray(pixels)
    if image.size == (size, size):
        return pixels
    return np.asarray(ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR))
