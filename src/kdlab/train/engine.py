"""The training engine: one loop for every method.

:func:`train` prepares a run (:func:`kdlab.train.prepare.prepare`: everything that can fail on the user's input,
before anything is written), creates the run directory and runs the loop; :func:`resume` continues a run directory
from its last checkpoint. The loop runs epochs of steps (:mod:`kdlab.train.step`), logs each loss term, evaluates val
and test after every epoch, checkpoints atomically and keeps ``metrics.jsonl`` and ``summary.json``
(:mod:`kdlab.train.summary`) current. It knows no method by name: it talks to the method through
:class:`~kdlab.methods.Method` and to the teachers through the run's :class:`~kdlab.train.teachers.TeacherFactory`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from kdlab import metrics
from kdlab.config import Recipe, dump_recipe, load_recipe
from kdlab.errors import KdlabError
from kdlab.io import WriteError, atomic_savez, atomic_write_text
from kdlab.store import checkpoint
from kdlab.train.predictions import (evaluate_method, evaluation_record, head_metrics, predict, robustness_record,
                                     split_metrics, teacher_precision_record)
from kdlab.train.prepare import Prepared, make_optimizer, prepare
from kdlab.store.rundir import RunDir
from kdlab.train.schedule import learning_rate
from kdlab.train.interrupt import RunInterrupted, StopSignals
from kdlab.train.step import NONFINITE_CHECK_EVERY, EpochInterrupted, EpochProgress, TrainingDiverged, train_epoch
from kdlab.tracking import Tracker, open_tracker
from kdlab.train.summary import checkpoint_epoch, print_epoch, run_summary, selected

__all__ = ["NONFINITE_CHECK_EVERY", "Prepared", "RunInterrupted", "RunStopped", "TrainingDiverged", "make_optimizer",
           "prepare", "resume", "train", "train_epoch"]


class RunStopped(Exception):
    """Raised by an ``on_epoch`` callback to end a run early (a pruned tuning trial): the run is marked with
    ``status`` and its last checkpoint kept."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status


def train(recipe: Recipe, out: str | Path, *, force: bool = False, quiet: bool = False, on_epoch=None) -> dict:
    """Run ``recipe`` into the new run directory ``out``; return the summary. ``on_epoch(record)`` is called with
    each epoch's metrics record once it is saved, and may raise :class:`RunStopped`."""
    with _stop_signals() as stop:
        prepared = prepare(recipe)
        if stop.requested:
            raise RunInterrupted(stop.signal, f"stopped by {stop.name} before the run started; nothing was written")
        run = RunDir(Path(out))
        lock = None
        try:
            lock = _on_main(prepared, lambda: run.prepare_new(force))
            if prepared.is_main:
                atomic_write_text(run.config, dump_recipe(prepared.recipe))
            return _loop(prepared, run, stop, quiet=quiet or not prepared.is_main, on_epoch=on_epoch)
        finally:
            if lock is not None:
                lock.release()


def _stop_signals() -> StopSignals:
    """SIGTERM / SIGINT stop a run at a step boundary (:mod:`kdlab.train.interrupt`); not in a data-parallel run,
    whose ranks would have to agree on the step (torchrun ends every rank on a signal; resume from the last epoch)."""
    return StopSignals(enabled=int(os.environ.get("WORLD_SIZE", "1")) == 1)


def resume(run_dir: str | Path, *, quiet: bool = False, on_epoch=None) -> dict:
    """Continue the run in ``run_dir`` from its last checkpoint; a completed run is returned as it is.
    ``on_epoch`` as for :func:`train` (called for the epochs trained from here on)."""
    run = RunDir(Path(run_dir))
    if not run.config.is_file():
        if run.path.is_dir() and run._started_but_empty():
            raise KdlabError(f"cannot resume {run.path}: it was stopped before it started (no config.yaml); train it "
                             f"again with kdlab train RECIPE --out {run.path}")
        raise KdlabError(f"cannot resume {run.path}: it is not a kdlab run directory (no config.yaml)")
    with _stop_signals() as stop:
        return _resume(run, prepare(load_recipe(run.config)), stop, quiet, on_epoch)


def _resume(run: RunDir, prepared: Prepared, stop: StopSignals, quiet: bool, on_epoch=None) -> dict:
    _check_same_teachers(run, run.read_summary(), prepared)  # before the lock: a refused resume changes nothing
    lock = None
    try:
        lock = _on_main(prepared, run.lock_existing)
        summary = run.read_summary()
        if summary is not None and summary.get("status") == "completed":
            if not quiet and prepared.is_main:
                print(f"{run.path} is already complete", file=sys.stderr)
            return summary
        if prepared.is_main:
            run.checkpoint.mkdir(exist_ok=True)
        # Killed before the first checkpoint: nothing to keep but the config, so the loop starts afresh. (Every rank
        # reads the checkpoint: data-parallel resumes need the run directory on a file system all ranks see.)
        has_checkpoint = (run.checkpoint / checkpoint.STATE_FILE).is_file()
        if prepared.distributed is not None:
            has_checkpoint = prepared.distributed.broadcast_object(has_checkpoint)
        return _loop(prepared, run, stop, quiet=quiet or not prepared.is_main,
                     resume_from=run.checkpoint if has_checkpoint else None, on_epoch=on_epoch)
    finally:
        if lock is not None:
            lock.release()


def _check_same_teachers(run: RunDir, summary: dict | None, prepared: Prepared) -> None:
    """A resumed run distils from the teachers it started with: weights that changed since (the sha256 its summary
    recorded at the start) are a one-line error, not a silent switch of teacher half-way."""
    before = (summary or {}).get("teachers") or {}
    now = prepared.teachers.records() if prepared.teachers is not None else {}
    for name, record in before.items():
        then, current = record.get("weights_sha256"), (now.get(name) or {}).get("weights_sha256")
        if then and current and then != current:
            raise KdlabError(f"cannot resume {run.path}: its {name} ({record.get('run')}) has other weights than when "
                             f"the run started (sha256 {then[:12]} then, {current[:12]} now); restore that teacher or "
                             f"train the student again")


def _on_main(prepared: Prepared, action):
    """Run ``action`` on the process that writes (rank 0); a user error there stops every rank with its message."""
    if prepared.distributed is None:
        return action()
    result, error = None, None
    if prepared.is_main:
        try:
            result = action()
        except KdlabError as caught:
            error = str(caught)
    error = prepared.distributed.broadcast_object(error)
    if error is not None:
        raise KdlabError(error)
    return result


def _loop(prepared: Prepared, run: RunDir, stop: StopSignals, quiet: bool, resume_from: Path | None = None,
          on_epoch=None) -> dict:
    recipe, runtime, method = prepared.recipe, prepared.runtime, prepared.method
    optimizer = make_optimizer(method, recipe)
    writes = prepared.is_main  # data-parallel: rank 0 alone writes the run directory
    if not writes:
        run = _ReadOnlyRunDir(run.path)
    epochs, steps_per_epoch = recipe.train.epochs, len(prepared.train_loader)
    best_by = "val_acc" if "val" in prepared.eval_loaders else "test_acc"
    progress = recipe.runtime.progress
    show_bar = sys.stderr.isatty() if progress == "auto" else bool(progress)

    history: list[dict] = []
    best: dict | None = None
    start_epoch, wall, train_seconds, train_images = 0, 0.0, 0.0, 0
    skipped: list[dict] = []  # steps skipped for a non-finite loss or gradient (train.nonfinite: skip)
    progress: EpochProgress | None = None  # a mid-epoch checkpoint's progress through epoch start_epoch + 1
    if resume_from is not None:
        state = checkpoint.restore_checkpoint(resume_from, method, optimizer)
        missing = [key for key in ("history", "best", "wall_seconds", "train_seconds", "train_images") if key not in state]
        if missing or not isinstance(state["history"], list):
            raise KdlabError(f"checkpoint {resume_from / checkpoint.STATE_FILE} is damaged: it has no "
                             f"{(missing or ['valid history'])[0]}")
        start_epoch, history, best = state["epoch"], state["history"], state["best"]
        wall, train_seconds, train_images = state["wall_seconds"], state["train_seconds"], state["train_images"]
        skipped = state.get("skipped_steps", [])
        if state.get("partial") is not None:
            try:
                progress = EpochProgress.from_record(state["partial"])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise KdlabError(f"checkpoint {resume_from / checkpoint.STATE_FILE} is damaged: its partial epoch "
                                 f"record is unreadable") from None
        run.write_metrics(history)
    session_start = time.perf_counter()

    def summary(status: str, error: str | None = None) -> dict:
        record = run_summary(prepared, status, history, best, best_by, wall + time.perf_counter() - session_start,
                          train_images / train_seconds if train_seconds else None, error)
        record["skipped_steps"] = list(skipped)
        record["last_checkpoint_epoch"] = checkpoint_epoch(run)
        return record

    def save(epoch_done: int, partial: EpochProgress | None = None) -> None:
        if prepared.teachers is not None:
            prepared.teachers.save_caches()
        extra = {"history": history, "best": best, "wall_seconds": wall + time.perf_counter() - session_start,
                 "train_seconds": train_seconds, "train_images": train_images, "skipped_steps": skipped}
        if partial is not None:
            extra["partial"] = partial.record()
        checkpoint.save_checkpoint(run.checkpoint, epoch_done, method, optimizer, extra,
                                   step=partial.steps if partial is not None else None)

    def interrupted(epoch_done: int, partial: EpochProgress | None, saved: bool = False) -> RunInterrupted:
        """Checkpoint where the run stopped on a signal (unless ``saved`` just now), mark it interrupted; the
        exception to raise."""
        if writes and not saved:
            save(epoch_done, partial)
        where = f"epoch {epoch_done + 1}, step {partial.steps}" if partial is not None else f"after epoch {epoch_done}"
        message = f"stopped by {stop.name} at {where}, checkpointed; continue with kdlab train --resume {run.path}"
        ended("interrupted", {**summary("interrupted", message), "interrupted_by": stop.name})
        return RunInterrupted(stop.signal, message)

    def ended(status: str, record: dict) -> None:
        run.write_summary(record)
        tracker.finish(status=status, summary=record, run_dir=run.path)

    tracker = open_tracker(recipe, run.path) if writes else Tracker()
    tracker.start(config=recipe.to_dict(), run_dir=run.path, resumed=resume_from is not None,
                  step=start_epoch * steps_per_epoch + (progress.steps if progress is not None else 0))
    run.write_summary(summary("running"))
    last_predictions: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    last_heads = None
    groups = {split: loader.groups for split, loader in prepared.eval_loaders.items()}
    try:
        if stop.requested:  # the signal came while the run was being set up
            raise interrupted(start_epoch, progress)
        for epoch in range(start_epoch, epochs):
            epoch_start = time.perf_counter() - (progress.seconds if progress is not None else 0.0)
            try:
                terms, correct, seen = train_epoch(prepared, optimizer, epoch, show_bar=show_bar, skipped=skipped,
                                                   progress=progress, stop=lambda: stop.requested, tracker=tracker)
            except EpochInterrupted as stopped:
                raise interrupted(epoch, stopped.progress) from None
            progress = None
            seconds = time.perf_counter() - epoch_start
            train_seconds += seconds
            train_images += seen
            record = {"epoch": epoch + 1, "lr": learning_rate(epoch * steps_per_epoch, steps_per_epoch, epochs, recipe.optim.lr, recipe.schedule)}
            record["train_loss"] = sum(terms.values())
            record.update({f"train_{name}": value for name, value in terms.items()})
            record["train_acc"] = correct / seen
            val_loader = prepared.eval_loaders.get("val")
            method.end_epoch(epoch, (lambda: predict(method.model, val_loader, runtime)) if val_loader else None)
            record.update({f"method_{name}": value for name, value in method.epoch_log().items()})
            last = epoch + 1 == epochs
            evaluated = last or (epoch + 1) % recipe.train.eval_every == 0
            if evaluated:
                last_predictions, last_heads = evaluate_method(method, prepared.eval_loaders, runtime)
                for split, predictions in last_predictions.items():
                    record.update({f"{split}_{k}": v for k, v in split_metrics(*predictions, groups[split]).items()})
                if last_heads is not None:
                    record["inference_head"] = method.inference_head
                    record.update(head_metrics(last_heads, groups))
            record["epoch_seconds"] = time.perf_counter() - epoch_start
            record["train_images_per_second"] = seen / seconds
            history.append(record)
            if evaluated and (best is None or record[best_by] > best[best_by]):
                best = selected(record)
                if writes:
                    checkpoint.save_tensors(run.checkpoint / "best.safetensors", method.export_state())
            if not quiet:
                print_epoch(record, epochs)
            saved = writes and (last or (epoch + 1) % recipe.checkpoint.every == 0)
            if saved:
                save(epoch + 1)
            run.write_metrics(history)
            run.write_summary(summary("running"))
            tracker.log_epoch(epoch + 1, (epoch + 1) * steps_per_epoch, record)
            if on_epoch is not None:
                on_epoch(record)
            if stop.requested and not last:  # the signal came during evaluation or the checkpoint
                raise interrupted(epoch + 1, None, saved=saved)
        if not last_predictions:  # resumed after the last epoch's checkpoint: recompute the final predictions
            last_predictions, last_heads = evaluate_method(method, prepared.eval_loaders, runtime)
        if writes:
            run.predictions.mkdir(exist_ok=True)
            for split, (logits, labels) in last_predictions.items():
                extra = {} if groups[split] is None else {"groups": groups[split].cpu().numpy()}
                atomic_savez(run.predictions / f"{split}.npz", logits=logits.numpy(), labels=labels.numpy(), **extra)
            checkpoint.save_tensors(run.checkpoint / "model.safetensors", method.export_state())
        teacher = prepared.teachers.primary if prepared.teachers is not None else None
        teacher_predictions = {split: predict(teacher, loader, runtime) for split, loader in prepared.eval_loaders.items()} \
            if teacher is not None else None
        evaluation = {"checkpoint": "final", **evaluation_record(last_predictions, teacher_predictions, groups)}
        if teacher is not None and teacher_predictions:
            precision_record = teacher_precision_record(teacher, prepared.eval_loaders, runtime, teacher_predictions)
            if precision_record is not None:
                evaluation["teacher_precision"] = precision_record
        final = {**summary("completed"), "evaluation": evaluation}
        if recipe.robustness is not None:
            robust = robustness_record(method.model, prepared.eval_loaders, runtime, recipe.robustness,
                                       recipe.data.mean, recipe.data.std)
            final["robustness"] = robust
            final["final"] = {**final["final"], f"{recipe.robustness.split}_robust_acc": robust["robust_acc"]}
        if last_heads is not None:
            final["inference_head"] = method.inference_head
            final["heads"] = {head: {split: metrics.evaluate_all(*per_head[head], groups[split])
                                     for split, per_head in last_heads.items()}
                              for head in next(iter(last_heads.values()))}
        ended("completed", final)
        return final
    except TrainingDiverged as error:
        ended("failed", summary("failed", str(error)))
        raise
    except RunStopped as stopped:
        ended(stopped.status, summary(stopped.status, str(stopped)))
        raise
    except WriteError as error:
        try:  # the disk may have room for this small file even when a checkpoint did not fit
            ended("failed", summary("failed", str(error)))
        except WriteError:
            pass
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: the last checkpoint stands
        ended("interrupted", summary("interrupted", "interrupted by the user; continue with kdlab train --resume"))
        raise


class _ReadOnlyRunDir(RunDir):
    """The run directory as ranks > 0 of a data-parallel run see it: they read it (to resume), never write."""

    def write_metrics(self, history: list[dict]) -> None:
        pass

    def write_summary(self, summary: dict) -> None:
        pass
