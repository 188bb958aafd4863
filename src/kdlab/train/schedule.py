"""Learning rate as a pure function of the global step, so nothing but the step count needs saving on resume."""

from __future__ import annotations

import math

from kdlab.config import ScheduleConfig


def learning_rate(step: int, steps_per_epoch: int, epochs: int, base_lr: float, schedule: ScheduleConfig) -> float:
    """lr at optimizer step ``step`` (0-based) of a run of ``epochs`` epochs.

    * warm-up: linear from base_lr / W to base_lr over the first W = warmup_epochs * steps_per_epoch steps;
    * ``multistep``: base_lr * gamma ** #{milestones m : epoch >= m}, epoch = step // steps_per_epoch (0-based);
    * ``cosine``: min_lr + (base_lr - min_lr) * (1 + cos(pi * t)) / 2, t going from 0 to 1 per step after warm-up;
    * ``linear``: base_lr + (min_lr - base_lr) * t, the same t (the one-cycle / triangular schedule of Smith &
      Topin 2017 when combined with a warm-up; airbench's CIFAR-10 speedruns use it);
    * ``constant``: base_lr.
    """
    warmup_steps = round(schedule.warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule.name == "multistep":
        epoch = step // steps_per_epoch
        return base_lr * schedule.gamma ** sum(epoch >= m for m in schedule.milestones)
    if schedule.name in ("cosine", "linear"):
        t = min((step - warmup_steps) / max(epochs * steps_per_epoch - warmup_steps, 1), 1.0)
        fall = 0.5 * (1.0 - math.cos(math.pi * t)) if schedule.name == "cosine" else t  # 0 -> 1
        return base_lr + (schedule.min_lr - base_lr) * fall
    return base_lr
