"""On-device augmentation of whole batches: random crop with padding and horizontal flip.

Both are discrete: a *view* of an image is (dy, dx, flip) with dy, dx in [0, 2 * padding] and flip in {0, 1}, so an
image has (2p + 1)^2 * 2 possible views. Views are sampled as tensors first and applied second, so a view can be
named (``view_index``) and re-applied exactly, which is what makes teacher-logit caching possible.

The crop and the flip are one gather from the unpadded image: output pixel (i, j) of a view reads source pixel
(dy + i - p, dx + j' - p) with j' = W - 1 - j when flipped. Out-of-range source pixels are zero (``"zero"``, like
torchvision's ``RandomCrop(padding=p)`` on raw pixels, i.e. black) or mirrored without repeating the edge
(``"reflect"``, like ``numpy.pad(mode="reflect")``). Images are N x H x W x C, so the result viewed as N x C x H x W
is already in channels_last memory order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PADDING_MODES = ("zero", "reflect")


@dataclass(frozen=True)
class Views:
    """Per-sample view parameters: crop offsets ``dy``, ``dx`` in [0, 2p] and ``flip`` in {0, 1} (int64, N)."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor

    def __getitem__(self, index) -> "Views":
        return Views(self.dy[index], self.dx[index], self.flip[index])

    def to(self, device) -> "Views":
        return Views(self.dy.to(device), self.dx.to(device), self.flip.to(device))


@dataclass(frozen=True)
class CropFlip:
    """Random crop of the original size from the image padded by ``padding`` on each side, then a random
    horizontal flip with probability 1/2 if ``flip``. ``padding=0`` and ``flip=False`` is the identity."""

    padding: int = 0
    padding_mode: str = "zero"
    flip: bool = False
    discrete = True  # every output is one of num_views named views: teacher logits can be cached per view

    def __post_init__(self):
        if self.padding < 0:
            raise ValueError(f"crop padding must be >= 0, got {self.padding}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")

    @property
    def is_identity(self) -> bool:
        return self.padding == 0 and not self.flip

    @property
    def num_views(self) -> int:
        return (2 * self.padding + 1) ** 2 * (2 if self.flip else 1)

    def record(self) -> dict:
        return {"padding": self.padding, "padding_mode": self.padding_mode, "flip": self.flip}

    def sample(self, n: int, generator: torch.Generator, **_) -> Views:
        """Draw ``n`` views on the generator's device (the loader's image size and samples are not needed)."""
        device = generator.device
        offsets = torch.randint(0, 2 * self.padding + 1, (2, n), generator=generator, device=device)
        flips = torch.randint(0, 2, (n,), generator=generator, device=device) if self.flip else offsets.new_zeros(n)
        return Views(offsets[0], offsets[1], flips)

    def view_index(self, views: Views) -> torch.Tensor:
        """A unique integer in [0, num_views) for each view."""
        side = 2 * self.padding + 1
        index = views.dy * side + views.dx
        return index * 2 + views.flip if self.flip else index

    def views_of(self, index: torch.Tensor, samples: torch.Tensor | None = None) -> Views:
        """The views named by ``index`` (the inverse of :meth:`view_index`; the same for every sample)."""
        side = 2 * self.padding + 1
        flip = index % 2 if self.flip else torch.zeros_like(index)
        cell = index // 2 if self.flip else index
        return Views(cell // side, cell % side, flip)

    def apply(self, images: torch.Tensor, views: Views) -> torch.Tensor:
        """Apply ``views`` to uint8 (or float) images N x H x W x C; returns the same layout and dtype."""
        if self.is_identity:
            return images
        n, h, w, _ = images.shape
        p = self.padding
        rows = views.dy[:, None] + torch.arange(h, device=images.device) - p
        cols_ahead = torch.arange(w, device=images.device)
        cols_ahead = torch.where(views.flip[:, None].bool(), w - 1 - cols_ahead, cols_ahead)
        cols = views.dx[:, None] + cols_ahead - p
        if self.padding_mode == "reflect":
            rows, cols = _reflect(rows, h), _reflect(cols, w)
            valid = None
        else:
            valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
            rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        # One 1-D gather of whole pixels (C values each) by flat index: about 1.5x faster on the CPU than
        # advanced indexing with three broadcast index tensors, and the same result.
        flat = (torch.arange(n, device=images.device)[:, None, None] * (h * w) + rows[:, :, None] * w + cols[:, None, :])
        out = images.reshape(n * h * w, -1).index_select(0, flat.reshape(-1)).view(images.shape)
        if valid is not None:
            out = out * valid[..., None].to(out.dtype)
        return out


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror indices into [0, size) without repeating the edge pixel (valid while padding < size)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)
