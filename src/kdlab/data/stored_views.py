"""Stored views: N fixed RandomResizedCrop boxes per training image, so random crops become discrete.

FKD (Shen & Xing 2022, "A Fast Knowledge Distillation Framework for Visual Recognition") makes distillation with
RandomResizedCrop cheap by fixing, per image, a set of crop boxes once, storing the teacher's logits of each, and
letting every later student train on exactly those crops. Here image ``s`` has ``count`` views (slots
0..count-1); the box of slot ``v`` is drawn by :class:`~kdlab.data.resized_crop.RandomResizedCrop` from a generator
seeded by (``seed``, ``v``, block of 4096 images that holds ``s``), so it is a pure function of (seed, v, s): the
same in every run, for any validation split, on any device. Each epoch every image gets a uniformly drawn slot
(from the loader's epoch generator, like every other augmentation), and the view index of an input is its slot,
so teacher logits are cached per (image, slot) by :class:`~kdlab.teacher.cache.TeacherLogitCache` or stored in
top-k form by :class:`~kdlab.teacher.stored.StoredTeacherViews`.

With ``count`` views per image, an epoch sees each image under one of ``count`` crops instead of a fresh one: FKD
uses 4-10 per image and reports ImageNet accuracy on par with fresh crops; it is a recorded property of the run
(the augmentation record names it), not a silent change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from kdlab.data.resized_crop import Boxes, RandomResizedCrop

BLOCK = 4096  # images whose boxes come from one generator (so a box does not depend on how many images there are)
TAG = 0x5F0F  # separates these generators' seeds from the epoch generators'


@dataclass(frozen=True)
class StoredViews:
    """``count`` fixed boxes of ``crop`` per image, drawn with ``seed``; one of them (uniformly) per image per
    epoch."""

    crop: RandomResizedCrop
    count: int
    seed: int = 0
    discrete = True
    is_identity = False
    _tables: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"stored_views must be a positive whole number of views per image, got {self.count!r}")

    @property
    def num_views(self) -> int:
        return self.count

    @property
    def size(self) -> int:
        return self.crop.size

    def record(self) -> dict:
        return {"kind": "stored_views", "crop": self.crop.record(), "count": self.count, "seed": self.seed}

    def table(self, num_samples: int, image_size: tuple[int, int]) -> torch.Tensor:
        """num_samples x count x 5 int32 boxes (top, left, height, width, flip) of images 0..num_samples-1."""
        key = (int(num_samples), tuple(int(v) for v in image_size))
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        blocks = []
        for block in range((key[0] + BLOCK - 1) // BLOCK):
            slots = []
            for slot in range(self.count):
                state = np.random.SeedSequence([TAG, int(self.seed), slot, block]).generate_state(1, np.uint64)[0]
                generator = torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))
                slots.append(self.crop.sample(BLOCK, generator, image_size=key[1]).stacked())
            blocks.append(torch.stack(slots, dim=1))
        table = torch.cat(blocks)[: key[0]].to(torch.int32)
        self._tables.clear()  # one image size per loader: keep only the latest table
        self._tables[key] = table
        return table

    def views_of(self, index: torch.Tensor, samples: torch.Tensor | None = None,
                 image_size: tuple[int, int] | None = None) -> Boxes:
        """The boxes of slot ``index`` of images ``samples`` (source indices)."""
        if samples is None:
            raise ValueError("stored views are per image: views_of needs the samples")
        if image_size is None:
            if len(self._tables) != 1:
                raise ValueError("views_of needs the image size before the first epoch is sampled")
            image_size = next(iter(self._tables))[1]
        table = self.table(max(int(samples.max()) + 1, self._table_rows()), image_size)
        return Boxes.from_stacked(table[samples.cpu(), index.cpu()], slot=index.cpu()).to(index.device)

    def _table_rows(self) -> int:
        return next(iter(self._tables))[0] if self._tables else 0

    def sample(self, n: int, generator: torch.Generator, image_size=None, samples: torch.Tensor | None = None,
               **_) -> Boxes:
        """One uniformly drawn stored view of each of the ``n`` images ``samples`` (source indices, in the order
        the views are used)."""
        if samples is None or image_size is None:
            raise ValueError("stored views need the images' source indices and size")
        slot = torch.randint(0, self.count, (n,), generator=generator, device=generator.device)
        return self.views_of(slot, samples.to(slot.device), image_size)

    def view_index(self, views: Boxes) -> torch.Tensor:
        return views.slot

    def apply(self, images: torch.Tensor, views: Boxes) -> torch.Tensor:
        return self.crop.apply(images, views)
