"""Decoding many small JPEG/PNG files into one uint8 N x H x W x C array, in the order given.

Reading and decoding are split: a ``ThreadPoolExecutor`` reads the files' bytes a chunk at a time, a few chunks
ahead and in order, and the calling thread decodes each chunk with Pillow as it arrives. Measured on the CIFAR-10
JPEGs (32x32, ~1 KB each, 2 cores) a file costs about 0.1 ms, of which the JPEG decode proper (which releases the
GIL) is under half; the rest is Python inside Pillow (marker parsing, decoder set-up) holding the GIL. Decoding in
two threads was therefore no faster than in one (6-7 s for 60,000 files either way, sometimes slower through GIL
hand-offs); reading in threads is what pays, because on a cold disk the reads are the slow part and they do
release the GIL.
"""

from __future__ import annotations

import io
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from kdlab.errors import KdlabError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PIL_FORMATS = ("JPEG", "PNG")
CHANNELS = {"RGB": 3, "L": 1}
CHUNK_FILES = 256
READERS = min(8, 2 * (os.cpu_count() or 1))
CHUNKS_AHEAD = 2 * READERS


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def progress_bar(total: int, description: str) -> tqdm:
    """A tqdm bar on stderr, shown only on a terminal and unless ``KDLAB_NO_PROGRESS=1``."""
    hidden = os.environ.get("KDLAB_NO_PROGRESS") == "1" or not sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, disable=hidden, leave=False)


def read_files(paths: Sequence[str]) -> list[bytes]:
    blobs = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                blobs.append(handle.read())
        except OSError as error:
            raise KdlabError(f"{path}: cannot read image file: {error.strerror or error}") from None
    return blobs


def decode(path: str, blob: bytes, mode: str) -> np.ndarray:
    """The pixels of one encoded image as H x W (mode "L") or H x W x 3 (mode "RGB") uint8."""
    try:
        with Image.open(io.BytesIO(blob), formats=PIL_FORMATS) as image:
            image.load()
            return np.asarray(image if image.mode == mode else image.convert(mode))
    except Exception as error:  # Pillow signals a corrupt, truncated or foreign file with many exception types
        reason = "not recognised as JPEG or PNG data" if isinstance(error, UnidentifiedImageError) else str(error)
        raise KdlabError(f"{path}: not a readable JPEG or PNG image ({reason})") from None


def decode_images(paths: Sequence[str], mode: str, description: str = "decoding images") -> np.ndarray:
    """All ``paths`` decoded in ``mode`` ("RGB" or "L") into one N x H x W x C array; every image must have the
    size of the first one."""
    if not paths:
        raise ValueError("decode_images needs at least one file")
    chunks = [paths[i : i + CHUNK_FILES] for i in range(0, len(paths), CHUNK_FILES)]
    images: np.ndarray | None = None
    index = 0
    with progress_bar(len(paths), description) as bar, ThreadPoolExecutor(READERS, "kdlab-read") as pool:
        pending = deque(pool.submit(read_files, chunk) for chunk in chunks[:CHUNKS_AHEAD])
        try:
            for next_chunk in range(CHUNKS_AHEAD, len(chunks) + CHUNKS_AHEAD):
                blobs = pending.popleft().result()
                if next_chunk < len(chunks):
                    pending.append(pool.submit(read_files, chunks[next_chunk]))
                for blob in blobs:
                    pixels = decode(paths[index], blob, mode)
                    if images is None:
                        images = np.empty((len(paths), *pixels.shape[:2], CHANNELS[mode]), dtype=np.uint8)
                    elif pixels.shape[:2] != images.shape[1:3]:
                        (h, w), (ref_h, ref_w) = pixels.shape[:2], images.shape[1:3]
                        raise KdlabError(f"{paths[index]}: image is {w}x{h} pixels but {paths[0]} is {ref_w}x{ref_h}; "
                                         f"all images must have one size")
                    images[index] = pixels.reshape(images.shape[1:])
                    index += 1
                bar.update(len(blobs))
        finally:
            for future in pending:
                future.cancel()
    return images
