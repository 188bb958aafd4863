"""One training epoch, a step at a time, with the guard against non-finite losses and gradients.

A step calls the method (or its DDP wrapper) in the one shape every method has, ``(inputs, labels, epoch, keys)``,
sums the loss terms it returns, back-propagates, checks every term and the gradient norm for NaN and infinity
(:data:`NONFINITE_CHECK_EVERY`), and steps the optimizer; the epoch returns each term's mean per sample.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from kdlab.train.distributed import shard_loss_weight
from kdlab.train.schedule import learning_rate

if TYPE_CHECKING:
    from kdlab.train.prepare import Prepared


class TrainingDiverged(RuntimeError):
    """A loss term or the gradient became NaN or infinite (and was not skipped)."""


@dataclass
class EpochProgress:
    """Where an epoch stopped: ``steps`` optimizer steps done, each term's sum over the samples seen (float32
    values, kept exactly: a resumed epoch's means equal an uninterrupted one's), correct predictions, samples seen and
    the seconds it took so far. Stored in a mid-epoch checkpoint (:meth:`record`, :meth:`from_record`)."""

    steps: int = 0
    term_sums: dict[str, float] = field(default_factory=dict)
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    def record(self) -> dict:
        return {"steps": self.steps, "term_sums": dict(self.term_sums), "correct": self.correct, "seen": self.seen,
                "seconds": self.seconds}

    @classmethod
    def from_record(cls, record: dict) -> "EpochProgress":
        return cls(int(record["steps"]), {str(k): float(v) for k, v in record["term_sums"].items()},
                   int(record["correct"]), int(record["seen"]), float(record["seconds"]))


class EpochInterrupted(Exception):
    """A stop was requested (:mod:`kdlab.train.interrupt`): the epoch ended after a whole step, at ``progress``."""

    def __init__(self, progress: EpochProgress):
        super().__init__(f"stopped after step {progress.steps}")
        self.progress = progress



#: On CUDA the finiteness of each step is checked on the device and read back every this many steps (one host sync),
#: with the step and term of the first bad one; on the CPU, and with ``train.nonfinite: skip``, every step.
NONFINITE_CHECK_EVERY = 25


def train_epoch(prepared: Prepared, optimizer, epoch: int, *, show_bar: bool = False, max_steps: int | None = None,
                skipped: list[dict] | None = None, progress: EpochProgress | None = None, stop=None, tracker=None):
    """One epoch (or its first ``max_steps`` steps, for benchmarks); returns ({term: mean per sample}, correct
    count, samples seen).

    ``progress`` continues an epoch that stopped part-way (a mid-epoch checkpoint) after its first
    ``progress.steps`` steps. ``stop()`` is asked after every step; when it is true the epoch raises
    :class:`EpochInterrupted` with its progress. ``tracker`` (:class:`kdlab.tracking.Tracker`) gets the step's
    scalars every ``tracker.every_steps`` steps.

    Every step's loss terms and gradient norm are checked for NaN and infinity (:data:`NONFINITE_CHECK_EVERY`). A
    bad step raises :class:`TrainingDiverged` naming the epoch, the step and the term (or the gradient), before
    anything of the epoch is saved; with ``train.nonfinite: skip`` it is skipped instead (no update, not counted in
    the epoch's means), recorded in ``skipped``, up to ``train.max_skipped_steps`` in the run."""
    recipe, runtime, method = prepared.recipe, prepared.runtime, prepared.method
    steps_per_epoch = len(prepared.train_loader)
    method.train()
    device = runtime.device
    progress = progress or EpochProgress()
    term_sums = {name: torch.tensor(value, dtype=torch.float32, device=device)
                 for name, value in progress.term_sums.items()}
    correct = torch.tensor(progress.correct, dtype=torch.int64, device=device)
    seen, first_step, started = progress.seen, progress.steps, time.perf_counter()
    log_every = tracker.every_steps if tracker is not None else None
    logged_at, logged_seen = started, seen
    skipped = [] if skipped is None else skipped
    skip = recipe.train.nonfinite == "skip"
    every = 1 if skip or device.type == "cpu" else NONFINITE_CHECK_EVERY
    parameters = [p for p in method.parameters() if p.requires_grad]
    trainer, distributed = prepared.trainer or method, prepared.distributed
    loader = prepared.train_loader

    def global_batch(step: int) -> int:
        return min(loader.batch_size, loader.num_samples - step * loader.batch_size)

    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # deferred checks (CUDA): first bad step
    bad_values: torch.Tensor | None = None  # its term values and gradient norm
    bar = tqdm(total=steps_per_epoch, initial=first_step, desc=f"epoch {epoch + 1}/{recipe.train.epochs}",
               leave=False, disable=not show_bar, file=sys.stderr, dynamic_ncols=True)
    with_keys = (prepared.teachers is not None and prepared.teachers.wants_keys) or method.needs_sample_keys
    batches = prepared.train_loader.batches(epoch, with_keys=with_keys, start=first_step)
    for step, batch in enumerate(batches, start=first_step):
        if max_steps is not None and step >= max_steps:
            break
        inputs, labels = batch[0], batch[1]
        lr = learning_rate(epoch * steps_per_epoch + step, steps_per_epoch, recipe.train.epochs, recipe.optim.lr, recipe.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with runtime.autocast():
            logits, terms = trainer(inputs, labels, epoch, batch[2] if with_keys else None)
        loss = sum(terms.values())
        if distributed is not None:  # DDP averages gradients over ranks: weight each shard by its share
            loss = loss * shard_loss_weight(labels.shape[0], global_batch(step), distributed.world)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, float("inf"))  # the norm only: no clipping at inf
        values = torch.stack([v.detach().float() for v in terms.values()] + [grad_norm.float()])
        finite = torch.isfinite(values).all()
        if every == 1:
            if not bool(finite):
                problem = _nonfinite_problem(list(terms), values.cpu(), epoch, step)
                if skip and len(skipped) < recipe.train.max_skipped_steps:
                    optimizer.zero_grad(set_to_none=True)
                    skipped.append({"epoch": epoch + 1, "step": step + 1, "problem": problem})
                    bar.update()
                    continue
                limit = f" (after {len(skipped)} skipped steps, the limit)" if skip else ""
                raise TrainingDiverged(f"{problem}{limit}; training diverged: lower the learning rate, or set "
                                       f"train.nonfinite: skip")
        else:
            newly_bad = (~finite) & (first_bad < 0)
            first_bad = torch.where(newly_bad, torch.tensor(step, device=device), first_bad)
            bad_values = values if bad_values is None else torch.where(newly_bad, values, bad_values)
            if (step + 1) % every == 0 and int(first_bad) >= 0:
                raise TrainingDiverged(_nonfinite_problem(list(terms), bad_values.cpu(), epoch, int(first_bad)) +
                                       "; training diverged: lower the learning rate, or set train.nonfinite: skip")
        optimizer.step()
        n = labels.shape[0]
        for name, value in terms.items():
            weighted = value.detach().float() * n
            term_sums[name] = term_sums[name] + weighted if name in term_sums else weighted
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += n
        bar.update()
        if log_every is not None and (epoch * steps_per_epoch + step + 1) % log_every == 0:
            now = time.perf_counter()
            scalars = {f"loss/{name}": float(value.detach()) for name, value in terms.items()}
            scalars.update({"loss/total": float(sum(scalars.values())), "lr": lr, "grad_norm": float(grad_norm),
                            "images_per_second": (seen - logged_seen) / max(now - logged_at, 1e-9)})
            tracker.log_step(epoch * steps_per_epoch + step + 1, scalars)
            logged_at, logged_seen = now, seen
        if stop is not None and stop() and step + 1 < steps_per_epoch:
            bar.close()
            raise EpochInterrupted(EpochProgress(
                step + 1, {name: value.item() for name, value in term_sums.items()}, int(correct), seen,
                progress.seconds + time.perf_counter() - started))
    bar.close()
    if distributed is not None:  # the epoch's sums over every rank's shards
        names = list(term_sums)
        totals = torch.stack([term_sums[name].double() for name in names] + [correct.double(), torch.tensor(
            float(seen), dtype=torch.float64, device=device)])
        distributed.all_reduce_sum(totals)
        term_sums = dict(zip(names, totals[: len(names)]))
        correct, seen = totals[len(names)].round().long(), int(totals[-1].round())
    if int(first_bad) >= 0:
        raise TrainingDiverged(_nonfinite_problem(list(term_sums), bad_values.cpu(), epoch, int(first_bad)) +
                               "; training diverged: lower the learning rate, or set train.nonfinite: skip")
    if seen == 0:
        raise TrainingDiverged(f"epoch {epoch + 1}: every step was skipped (non-finite loss or gradient)")
    terms = {name: value.item() / seen for name, value in term_sums.items()}
    return terms, correct.item(), seen


def _nonfinite_problem(names: list[str], values: torch.Tensor, epoch: int, step: int) -> str:
    """"epoch E, step S: loss term 'kd' is nan" (or "the gradient is inf") from the step's term values + grad norm."""
    where = f"epoch {epoch + 1}, step {step + 1}"
    for name, value in zip(names, values[:-1].tolist()):
        if not math.isfinite(value):
            return f"{where}: loss term {name!r} is {value}"
    return f"{where}: the gradient is {values[-1].item()} (every loss term is finite)"
