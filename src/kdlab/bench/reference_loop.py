"""The reference: CIFAR knowledge distillation trained the standard way, for ``kdlab bench`` to compare against.

This is the loop of the standard CIFAR KD code (RepDistiller's ``train_distill``), written from its description,
not copied: a ``torch.utils.data.DataLoader`` over PIL images with the per-sample transforms

    RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)

in worker processes, batches of 64, plain fp32 models in contiguous NCHW memory (no autocast, no channels_last, no
compile), SGD (lr 0.05, momentum 0.9, weight decay 5e-4), and per step: student forward, teacher forward under
``torch.no_grad()`` (teacher in eval mode), loss = 0.1 CE + 0.9 tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau))
(batchmean) at tau 4, zero_grad, backward, step; with loss.item() and top-1 accuracy read every step, as the
standard loop's meters do. Student only: cross-entropy alone.

torchvision cannot be used here (its wheel does not match this torch), so the transforms are written by hand with
PIL, numpy and torch, doing the same per-sample work torchvision does: ``Image.fromarray`` of each uint8 image (as
torchvision's CIFAR10 dataset does), padding with ``ImageOps.expand(border=4, fill=0)`` (torchvision's constant
padding of a PIL image), offsets drawn with ``torch.randint`` and ``Image.crop``, a flip when ``torch.rand(1) < 0.5``
with ``Image.transpose(FLIP_LEFT_RIGHT)``, ToTensor as ``np.array`` -> ``torch.from_numpy`` -> ``permute(2, 0, 1)``
-> ``float().div(255)``, and Normalize as ``(x - mean[:, None, None]) / std[:, None, None]``.

The loader uses ``persistent_workers=True`` (with workers), so the benchmark, which alternates short timed blocks of
this loop with blocks of kdlab, does not time worker start-up at every block or epoch: the standard scripts pay it
once per epoch (about 700 steps at batch 64), which a block of a few dozen steps would overstate. While kdlab's
block runs, the idle workers keep at most ``prefetch_factor x workers`` (2 x W) batches ready; those few batches of
per-sample PIL work are the only reference work done off the clock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps


class PilCropFlipDataset(torch.utils.data.Dataset):
    """uint8 images N x H x W x C (C = 3, or 1 for grey) with labels; ``__getitem__`` returns the normalised float
    tensor C x H x W of a random padded crop (of the original size) and random horizontal flip, and the label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float], *,
                 padding: int = 4, flip: bool = True):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be uint8 N x H x W x C with C 1 or 3, got {images.dtype} {images.shape}")
        self.images = images
        self.labels = labels
        self.size = images.shape[1:3]  # (th, tw): RandomCrop(32) for CIFAR
        self.padding = padding
        self.flip = flip
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        array = self.images[index]
        img = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)  # "L" or "RGB", as a PIL dataset holds it
        target = int(self.labels[index])
        img = self.random_crop(img)
        img = self.random_flip(img)
        return self.normalize(self.to_tensor(img)), target

    def random_crop(self, img: Image.Image) -> Image.Image:
        """RandomCrop(size, padding): pad every side with black, then a crop at a uniformly random offset."""
        if self.padding > 0:
            img = ImageOps.expand(img, border=self.padding, fill=0)
        w, h = img.size
        th, tw = self.size
        i = int(torch.randint(0, h - th + 1, size=(1,)).item())
        j = int(torch.randint(0, w - tw + 1, size=(1,)).item())
        return img.crop((j, i, j + tw, i + th))

    def random_flip(self, img: Image.Image) -> Image.Image:
        """RandomHorizontalFlip(p=0.5)."""
        if self.flip and torch.rand(1) < 0.5:
            return img.transpose(Image.FLIP_LEFT_RIGHT)
        return img

    @staticmethod
    def to_tensor(img: Image.Image) -> torch.Tensor:
        """ToTensor: uint8 H x W x C on [0, 255] -> float32 C x H x W on [0, 1]."""
        x = torch.from_numpy(np.array(img, np.uint8, copy=True))
        x = x.view(img.size[1], img.size[0], len(img.getbands()))
        return x.permute((2, 0, 1)).contiguous().float().div(255)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize(mean, std), not in place."""
        return (x - self.mean[:, None, None]) / self.std[:, None, None]


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau)), summed over classes and averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    p_t = F.softmax(teacher_logits / tau, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * tau**2


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *, gamma: float = 0.1,
            alpha: float = 0.9, tau: float = 4.0) -> torch.Tensor:
    """gamma CE + alpha tau^2 KL: the standard CIFAR KD loss (0.1 CE + 0.9 KD at tau 4)."""
    return gamma * F.cross_entropy(student_logits, labels) + alpha * distill_kl(student_logits, teacher_logits, tau)


class ReferenceLoop:
    """Trains ``student`` (distilling from ``teacher`` if given) on (``images``, ``labels``) the standard way.

    ``run(steps)`` trains ``steps`` more steps and returns (images seen, seconds). The DataLoader iterator is kept
    across calls (a new one, with the same persistent workers, starts each new epoch), so consecutive calls continue
    one stream of epochs. ``close()`` stops the workers.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, student: torch.nn.Module,
                 teacher: torch.nn.Module | None = None, *, batch_size: int = 64, workers: int = 2, seed: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, padding: int = 4,
                 flip: bool = True, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                 gamma: float = 0.1, alpha: float = 0.9, tau: float = 4.0):
        if mean is None or std is None:
            scaled = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
            mean = scaled.mean(0).tolist() if mean is None else mean
            std = scaled.std(0).tolist() if std is None else std
        self.dataset = PilCropFlipDataset(images, labels, mean, std, padding=padding, flip=flip)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=False,
            drop_last=False, persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
        self.optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.gamma, self.alpha, self.tau = gamma, alpha, tau
        self._iterator = None
        self.epochs_started = 0
        self.last_loss: float | None = None
        self.last_acc: float | None = None

    def _next_batch(self):
        if self._iterator is None:
            self._iterator = iter(self.loader)
            self.epochs_started += 1
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.loader)  # the next epoch: a new shuffle, same (persistent) workers
            self.epochs_started += 1
            return next(self._iterator)

    def step(self, inputs: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        """One training step; returns (loss, top-1 accuracy) read back as Python floats, as the meters do."""
        inputs = inputs.float()
        logits = self.student(inputs)
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(inputs)
            loss = kd_loss(logits, teacher_logits, target, gamma=self.gamma, alpha=self.alpha, tau=self.tau)
        else:
            loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(dim=1) == target).float().mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item(), acc.item()

    def run(self, steps: int) -> tuple[int, float]:
        """Train ``steps`` steps; return (images seen, wall seconds), the data loading included."""
        self.student.train()
        if self.teacher is not None:
            self.teacher.eval()
        seen, losses = 0, 0.0
        start = time.perf_counter()
        for _ in range(steps):
            inputs, target = self._next_batch()
            loss, acc = self.step(inputs, target)
            seen += target.shape[0]
            losses += loss * target.shape[0]
            self.last_acc = acc
        seconds = time.perf_counter() - start
        self.last_loss = losses / seen if seen else None
        return seen, seconds

    def close(self) -> None:
        """Stop the worker processes (a persistent loader keeps them until its iterator is gone)."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
