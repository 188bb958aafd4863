"""CRD's memory bank: one unit embedding per training sample for the student and one for the teacher, updated by a
momentum average as samples are seen, with negatives drawn from other classes (RepDistiller's ``exact`` mode:
the positive is the sample itself). docs/methods/feature_kd.md §7."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdlab.errors import KdlabError


class ContrastMemory(nn.Module):
    """Banks ``student`` and ``teacher`` (N x d, uniform in [-1/sqrt(d/3), 1/sqrt(d/3)] at the start), the two
    normalisers Z (negative until the first batch sets them to mean(score) N), and the negatives' draw state; all
    buffers, so a resumed run continues with the same banks and draws. ``source_index`` and ``labels`` are the
    training split's, keyed by the loader's sample keys."""

    def __init__(self, source_index: np.ndarray, labels: np.ndarray, dim: int, negatives: int, momentum: float):
        super().__init__()
        n = len(labels)
        if negatives >= n:
            raise KdlabError(f"method crd: negatives {negatives} must be fewer than the {n} training samples")
        self.num_data, self.negatives, self.momentum = n, negatives, momentum
        bound = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("student", torch.rand(n, dim).mul_(2 * bound).add_(-bound))
        self.register_buffer("teacher", torch.rand(n, dim).mul_(2 * bound).add_(-bound))
        self.register_buffer("normalisers", torch.full((2,), -1.0, dtype=torch.float64))
        self.register_buffer("draw_seed", torch.randint(0, 2**62, (), dtype=torch.int64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        position = np.full(int(np.max(source_index)) + 1, -1, dtype=np.int64)
        position[np.asarray(source_index)] = np.arange(n)
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels)
        self.register_buffer("position", torch.from_numpy(position), persistent=False)
        self.register_buffer("labels", torch.from_numpy(labels), persistent=False)
        self.register_buffer("by_class", torch.from_numpy(order), persistent=False)
        self.register_buffer("class_start", torch.from_numpy(np.cumsum(counts) - counts), persistent=False)
        self.register_buffer("class_count", torch.from_numpy(counts), persistent=False)

    def rows(self, sample_keys: torch.Tensor) -> torch.Tensor:
        """Bank rows B x (K+1): each sample's own row, then K rows drawn uniformly (with replacement) from the
        samples of other classes, from a generator on the bank's device seeded by (draw_seed, step). One host sync
        a step: the seed, with the check that every key is in the bank."""
        inside = sample_keys < len(self.position)
        own = self.position[torch.where(inside, sample_keys, 0)]
        seed, outside = torch.stack([self.draw_seed + self.steps, (~inside | (own < 0)).any().long()]).tolist()
        if outside:
            raise KdlabError("method crd: a training batch holds samples outside the training split's memory bank")
        y = self.labels[own]
        count = self.class_count[y].unsqueeze(1)
        generator = torch.Generator(device=own.device).manual_seed(seed)
        others = self.num_data - count  # how many samples are of another class
        u = torch.rand(len(own), self.negatives, generator=generator, device=own.device, dtype=torch.float64)
        u = (u * others).long().minimum(others - 1)
        u = torch.where(u >= self.class_start[y].unsqueeze(1), u + count, u)  # skip the anchor's own class
        return torch.cat([own.unsqueeze(1), self.by_class[u]], dim=1)

    def normalise(self, which: int, scores: torch.Tensor) -> torch.Tensor:
        """scores / Z, Z set from the first batch's scores (mean x N) and then fixed (no host sync)."""
        current = self.normalisers[which]
        first = scores.detach().double().mean() * self.num_data
        self.normalisers[which] = torch.where(current < 0, first, current)
        return scores / self.normalisers[which].to(scores.dtype)

    @torch.no_grad()
    def update(self, own: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor) -> None:
        """m_i <- normalise(momentum m_i + (1 - momentum) v_i) for the batch's own rows ``own`` (gathered from every
        rank under torch.distributed, so every rank keeps the same banks)."""
        rows, student, teacher = _gathered(own, student.detach().float(), teacher.detach().float())
        for bank, new in ((self.student, student), (self.teacher, teacher)):
            mixed = bank[rows].mul_(self.momentum).add_(new, alpha=1 - self.momentum)
            bank.index_copy_(0, rows, F.normalize(mixed, dim=1))
        self.steps += 1


def _gathered(rows, student, teacher):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows, student, teacher
    size = torch.tensor([len(rows)], device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    largest = int(max(s.item() for s in sizes))
    parts = []
    for tensor in (rows, student, teacher):
        padded = torch.zeros((largest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: len(tensor)] = tensor
        gathered = [torch.zeros_like(padded) for _ in sizes]
        dist.all_gather(gathered, padded)
        parts.append(torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)]))
    return tuple(parts)
