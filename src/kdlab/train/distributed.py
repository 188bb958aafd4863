"""Data-parallel training under ``torchrun`` (DistributedDataParallel): process group, sharding, reductions, and a
synchronised BatchNorm that works on every backend.

``torchrun --nproc-per-node N -m kdlab train RECIPE.yaml`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in their environment; :func:`from_environment` joins the process group
(gloo on the CPU, NCCL on CUDA, device ``cuda:LOCAL_RANK``). Every rank builds the same model from the same seed
and draws the same epoch plan (order and augmentation views are functions of (seed, epoch)); each step's global
batch of ``train.batch_size`` samples is cut into ``WORLD_SIZE`` contiguous shards, one per rank, and each rank's
loss is weighted by (its shard size x WORLD_SIZE / global batch size), so DDP's gradient average is the gradient of
the global batch's mean loss, exactly as one process computes it, also for an uneven last batch.

Inexact, to float rounding only: the gradient is summed in a different order (per shard, then across ranks), and the
synchronised BatchNorm computes batch statistics from per-rank sums. Without ``sync_bn`` each rank normalises with
its own shard's statistics, a different (though common) model of the batch, and the results differ more.

Evaluation is sharded the same way and the logits are gathered, so every rank sees all of them; rank 0 alone writes
the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from kdlab.errors import KdlabError


@dataclass(frozen=True)
class Distributed:
    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (the first ``n % world`` ranks get one more)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_rows(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """The rows of every rank's shard of a split of ``total`` rows, in order (on ``local``'s device)."""
        largest = -(-total // self.world)
        padded = torch.zeros((largest, *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        sizes = [len(range(total)[Distributed(r, self.world, 0, self.backend).shard(total)]) for r in range(self.world)]
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    def barrier(self) -> None:
        dist.barrier()

    def broadcast_object(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def from_environment(device_type: str) -> Distributed | None:
    """Join the process group torchrun describes in the environment; None when not launched by torchrun (or with
    WORLD_SIZE 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as error:
            raise KdlabError(f"cannot join the torchrun process group ({backend}): {error}") from None
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, backend)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across all ranks: per-channel sums and
    sums of squares (and the count) are all-reduced with a differentiable all_reduce, so the backward pass sees the
    global statistics too. Works on any backend (gloo on the CPU, where torch's SyncBatchNorm does not run)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], device=x.device, dtype=torch.float32)
        stats = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), count])
        stats = all_reduce(stats, op=dist.ReduceOp.SUM)
        channels = xf.shape[1]
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(mean.detach() * momentum)
            self.running_var.mul_(1 - momentum).add_(var.detach() * (n / (n - 1).clamp_min(1)) * momentum)
        scale = torch.rsqrt(var + self.eps)
        y = (xf - mean[None, :, None, None]) * scale[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def synchronise_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm2d of ``module`` as a synchronised one: torch's SyncBatchNorm on CUDA, GlobalBatchNorm
    elsewhere (weights and running statistics kept)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            replacement.to(device=child.weight.device if child.affine else None)
            setattr(module, name, replacement)
        else:
            synchronise_batchnorm(child, device_type)
    return module


def shard_loss_weight(local: int, global_batch: int, world: int) -> float:
    """The factor that makes DDP's gradient average equal the global batch's mean-loss gradient."""
    return local * world / global_batch


__all__ = ["Distributed", "GlobalBatchNorm", "from_environment", "shard_loss_weight", "synchronise_batchnorm"]
