"""RandomResizedCrop on the device, for whole batches: the ImageNet training augmentation.

A view of an image is a box (top, left, height, width) and a flip bit. Boxes are drawn as torchvision's
``RandomResizedCrop.get_params`` draws them (Szegedy et al. 2015, "Going deeper with convolutions", the crop of
8%-100% of the area with aspect ratio in [3/4, 4/3]): up to ten attempts, each with area fraction
s ~ U(scale) and log aspect ratio ~ U(log ratio), width round(sqrt(s * A * r)), height round(sqrt(s * A / r)); the
first attempt that fits is placed at a uniform top-left corner; if none fits, the centre crop of the largest box
within the ratio bounds. The ten attempts of every image are drawn at once (one ``torch.rand`` of N x 10 x 4 from the
epoch's generator), so sampling is a few tensor operations, not a Python loop per image.

Applying a batch of boxes is one ``affine_grid`` + ``grid_sample`` (bilinear, ``align_corners=False``, border
padding): output pixel j of a crop of width w at ``left`` reads source x = left + (j + 1/2) w / S - 1/2, exactly the
sampling positions of ``torchvision.transforms.functional.resized_crop(..., antialias=False)``. Two differences,
both documented and tested: there is no antialiasing filter when the crop is shrunk by more than 2x (torchvision's
tensor path antialiases by default; PIL always does), and where a crop is enlarged the outermost output pixels may
blend in the source pixel just outside the box (torchvision clamps at the box edge).

Eval inputs of a run trained with RandomResizedCrop are :class:`CentreCrop`: the centre ``fraction`` of the
stored image resized to the same size (the ImageNet "resize 256, centre crop 224" is stored size 256, fraction
0.875, size 224).

Views are not discrete (a box is any of ~10^9), so live teacher logits cannot be cached per view; the stored views of
:mod:`kdlab.data.stored_views` make them so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTEMPTS = 10


@dataclass(frozen=True)
class Boxes:
    """Per-sample crop boxes in stored-image pixels (int64, N each) and flip bits; ``slot`` is the stored-view slot
    a box came from (:mod:`kdlab.data.stored_views`), or None for freshly drawn boxes."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor
    slot: torch.Tensor | None = None

    def __getitem__(self, index) -> "Boxes":
        return Boxes(*(t[index] for t in self.tensors()), slot=None if self.slot is None else self.slot[index])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.top, self.left, self.height, self.width, self.flip

    def to(self, device) -> "Boxes":
        return Boxes(*(t.to(device) for t in self.tensors()), slot=None if self.slot is None else self.slot.to(device))

    def stacked(self) -> torch.Tensor:
        """N x 5 int64: top, left, height, width, flip."""
        return torch.stack(self.tensors(), dim=1)

    @classmethod
    def from_stacked(cls, table: torch.Tensor, slot: torch.Tensor | None = None) -> "Boxes":
        table = table.long()
        return cls(*(table[..., i] for i in range(5)), slot=slot)


def _check_range(name: str, pair, low: float) -> tuple[float, float]:
    a, b = (float(v) for v in pair)
    if not (low < a <= b) or not math.isfinite(b):
        raise ValueError(f"{name} must be two numbers {low} < low <= high, got {list(pair)}")
    return a, b


@dataclass(frozen=True)
class RandomResizedCrop:
    """Random box of ``scale`` x the area and aspect ratio in ``ratio``, resized to ``size`` x ``size``; then a
    horizontal flip with probability 1/2 if ``flip``."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    discrete = False  # a box is one of too many to name: teacher logits are not cached per view
    is_identity = False

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive whole number of pixels, got {self.size!r}")
        object.__setattr__(self, "scale", _check_range("scale", self.scale, 0.0))
        if self.scale[1] > 1:
            raise ValueError(f"scale must lie in (0, 1], got {list(self.scale)}")
        object.__setattr__(self, "ratio", _check_range("ratio", self.ratio, 0.0))

    def record(self) -> dict:
        return {"kind": "random_resized_crop", "size": self.size, "scale": list(self.scale),
                "ratio": list(self.ratio), "flip": self.flip}

    def sample(self, n: int, generator: torch.Generator, image_size: tuple[int, int] | None = None, **_) -> Boxes:
        """Draw ``n`` boxes for images of ``image_size`` (height, width), on the generator's device."""
        if image_size is None:
            raise ValueError("RandomResizedCrop.sample needs the image size")
        h, w = (int(v) for v in image_size)
        device = generator.device
        u = torch.rand(n, ATTEMPTS, 4, generator=generator, device=device, dtype=torch.float64)
        area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[..., 0])
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_low + (log_high - log_low) * u[..., 1])
        widths = torch.round(torch.sqrt(area * aspect)).long()
        heights = torch.round(torch.sqrt(area / aspect)).long()
        fits = (widths > 0) & (widths <= w) & (heights > 0) & (heights <= h)
        first = fits.long().argmax(dim=1)  # the first attempt that fits (0 when none does: replaced below)
        pick = lambda t: t.gather(1, first[:, None]).squeeze(1)  # noqa: E731
        ch, cw, u_top, u_left = pick(heights), pick(widths), pick(u[..., 2]), pick(u[..., 3])
        top = torch.floor(u_top * (h - ch + 1)).long().clamp_max(h - ch)
        left = torch.floor(u_left * (w - cw + 1)).long().clamp_max(w - cw)
        fallback = self._fallback(h, w)
        none_fit = ~fits.any(dim=1)
        top, left, ch, cw = (torch.where(none_fit, torch.full_like(t, f), t)
                             for t, f in zip((top, left, ch, cw), fallback))
        flips = torch.randint(0, 2, (n,), generator=generator, device=device) if self.flip else top.new_zeros(n)
        return Boxes(top, left, ch, cw, flips)

    def _fallback(self, h: int, w: int) -> tuple[int, int, int, int]:
        """The centre crop of the largest box whose aspect ratio lies within ``ratio`` (torchvision's fallback)."""
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def apply(self, images: torch.Tensor, views: Boxes) -> torch.Tensor:
        """The crops of uint8 (or float) images N x H x W x C, resized: float32 N x size x size x C (values on the
        images' scale; a view of channels_last memory, like the other augmentations' output)."""
        return resize_boxes(images, views, self.size)


def resize_boxes(images: torch.Tensor, boxes: Boxes, size: int) -> torch.Tensor:
    """Each image's box resized to ``size`` x ``size`` (bilinear, no antialias), flipped where ``boxes.flip``."""
    n, h, w, _ = images.shape
    x = images.permute(0, 3, 1, 2).float()  # channels_last memory: grid_sample reads it in place
    top, left, height, width = (t.to(images.device, torch.float32) for t in boxes.tensors()[:4])
    sign = 1.0 - 2.0 * boxes.flip.to(images.device, torch.float32)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = sign * width / w
    theta[:, 0, 2] = (2 * left + width) / w - 1
    theta[:, 1, 1] = height / h
    theta[:, 1, 2] = (2 * top + height) / h - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


@dataclass(frozen=True)
class CentreCrop:
    """The centre ``fraction`` of each image (a square of fraction x its shorter side) resized to ``size``: the
    evaluation view of a run trained with :class:`RandomResizedCrop`."""

    size: int
    fraction: float = 1.0

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"eval_crop must lie in (0, 1], got {self.fraction}")

    def record(self) -> dict:
        return {"kind": "centre_crop", "size": self.size, "fraction": self.fraction}

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = images.shape
        side = max(1, int(round(self.fraction * min(h, w))))
        top, left = (h - side) // 2, (w - side) // 2
        if side == self.size:  # a plain crop: no resampling, exact pixels
            return images[:, top : top + side, left : left + side]
        full = lambda v: torch.full((n,), v, dtype=torch.long)  # noqa: E731
        return resize_boxes(images, Boxes(full(top), full(left), full(side), full(side), full(0)), self.size)
