"""The training engine: one loop for every method.

``prepare`` does everything that can fail on the user's input (device, data, model, method) before anything is
written; ``train`` then creates the run directory and runs the loop; ``resume`` continues a run directory from its
last checkpoint. The loop sums the loss terms a method returns, logs each, evaluates val and test after every epoch,
checkpoints atomically and keeps ``metrics.jsonl`` and ``summary.json`` current.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import kdlab
from kdlab import methods, metrics, models
from kdlab.config import Recipe, dump_recipe, load_recipe, method_params
from kdlab.data import Dataset
from kdlab.data.inputs import (features_record, fill_statistics, log_mel, make_loader, model_input_shape, probe_inputs,
                               recipe_dataset)
from kdlab.data.loader import DeviceLoader
from kdlab.errors import KdlabError
from kdlab.io import WriteError, atomic_savez, atomic_write_text
from kdlab.train import checkpoint
from kdlab.train.evaluate import evaluate_method, evaluation_record, head_metrics, predict, split_metrics
from kdlab.train.rundir import RunDir
from kdlab.train.compiled_inference import CompiledInference, should_compile_frozen
from kdlab.train.distributed import Distributed, from_environment, shard_loss_weight, synchronise_batchnorm
from kdlab.train.runtime import Runtime, compile_mode, resolve_runtime
from kdlab.train.schedule import learning_rate
from kdlab.version import git_sha, machine_description


AUTO_CACHE_LIMIT_BYTES = 4 << 30  # teacher_cache: auto stays off above this table size


class TrainingDiverged(RuntimeError):
    """A loss term or the gradient became NaN or infinite (and was not skipped)."""


class RunStopped(Exception):
    """Raised by an ``on_epoch`` callback to end a run early (a pruned tuning trial): the run is marked with
    ``status`` and its last checkpoint kept."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status


#: On CUDA the finiteness of each step is checked on the device and read back every this many steps (one host sync),
#: with the step and term of the first bad one; on the CPU, and with ``train.nonfinite: skip``, every step.
NONFINITE_CHECK_EVERY = 25


@dataclass
class Prepared:
    recipe: Recipe
    runtime: Runtime
    dataset: Dataset
    method: methods.Method
    train_loader: DeviceLoader
    eval_loaders: dict[str, DeviceLoader]
    distributed: Distributed | None = None  # data-parallel under torchrun
    trainer: torch.nn.Module | None = None  # what a training step calls: the method, or DDP(method)

    @property
    def model(self) -> torch.nn.Module:
        return self.method.model

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory (always, but for ranks > 0 of a data-parallel run)."""
        return self.distributed is None or self.distributed.is_main


def prepare(recipe: Recipe) -> Prepared:
    """Validate and build everything a run needs; writes nothing but the data cache. Fills data.mean/std (and, for
    audio, data.features)."""
    runtime = resolve_runtime(recipe.runtime)
    distributed = from_environment(runtime.device.type)
    if distributed is not None and runtime.device.type == "cuda":
        runtime = dataclasses.replace(runtime, device=torch.device("cuda", distributed.local_rank))
    if distributed is not None and recipe.train.batch_size < distributed.world:
        raise KdlabError(f"train.batch_size {recipe.train.batch_size} is smaller than the {distributed.world} "
                         f"processes: the global batch is split across them")
    data = recipe.data
    dataset = recipe_dataset(data, recipe.seed)
    fill_statistics(data, dataset, runtime.device)
    features = log_mel(data, dataset, runtime.device)

    def loader(split, train: bool) -> DeviceLoader:
        return make_loader(split, data, dataset, runtime.device,
                           recipe.train.batch_size if train else recipe.train.eval_batch_size, train=train,
                           seed=recipe.seed, drop_last=recipe.train.drop_last, channels_last=runtime.channels_last,
                           features=features, distributed=distributed)

    eval_loaders = {"test": loader(dataset.test, False)}
    if dataset.val is not None:
        eval_loaders = {"val": loader(dataset.val, False), **eval_loaders}
    train_loader = loader(dataset.train, True)
    input_shape = model_input_shape(data, dataset)

    torch.manual_seed(recipe.seed)
    model = models.create(recipe.model.name, num_classes=len(dataset.classes), in_channels=input_shape[0])
    _check_model_fits(model, recipe.model.name, dataset, probe_inputs(eval_loaders["test"]))
    context = methods.MethodContext(dataset, data.mean, data.std, recipe.model.name, input_shape=input_shape,
                                    features=features_record(data, dataset))
    method = methods.get(recipe.method.name)(model, method_params(recipe), context)
    method.to(runtime.device)
    if runtime.channels_last:
        method.to(memory_format=torch.channels_last)
    mode = compile_mode(runtime, recipe.runtime.cuda_graphs, recipe.train.batch_size)
    if runtime.compile:
        method.model.compile(mode=mode)
    if method.frozen and should_compile_frozen(runtime.compile_setting, len(dataset.train.labels)):
        for name in method.frozen:
            setattr(method, name, CompiledInference(getattr(method, name)))
    attach_teacher_cache(recipe, runtime, dataset, method, train_loader, distributed)
    trainer = method
    if distributed is not None:
        if recipe.train.sync_bn:
            synchronise_batchnorm(method, runtime.device.type)
        from torch.nn.parallel import DistributedDataParallel

        # Synchronised BatchNorm keeps every rank's running statistics equal; otherwise rank 0's are broadcast.
        sync_buffers = not recipe.train.sync_bn
        newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
        trainer = DistributedDataParallel(
            method, device_ids=[distributed.local_rank] if runtime.device.type == "cuda" else None,
            **({"forward_sync_buffers": sync_buffers} if newer else {"broadcast_buffers": sync_buffers}))
    return Prepared(recipe, runtime, dataset, method, train_loader, eval_loaders, distributed, trainer)


def attach_teacher_cache(recipe: Recipe, runtime: Runtime, dataset: Dataset, method, train_loader: DeviceLoader,
                         distributed: Distributed | None = None) -> None:
    """Give a distilling method a teacher-logit cache (:mod:`kdlab.teacher_cache`) as ``runtime.teacher_cache`` asks
    (data-parallel: each rank holds its own in memory, and rank 0 alone reads and writes the disk cache)."""
    mode = recipe.runtime.teacher_cache
    if not getattr(method, "uses_batch_keys", False) or mode == "off":
        return
    if not train_loader.discrete_views:
        if mode == "auto":
            return
        raise KdlabError(f"runtime.teacher_cache: {mode} needs a discrete augmentation (crop x flip); "
                         f"{type(train_loader.augment).__name__} is not")
    from kdlab.data.cache import cache_root
    from kdlab.teacher import WEIGHTS
    from kdlab.teacher_cache import TeacherLogitCache, cache_key

    params = method.params
    samples = int(dataset.train.source_index.max()) + 1
    teacher_recipe = load_recipe(Path(params.teacher) / "config.yaml")
    augment = train_loader.augment
    key = cache_key(
        teacher_weights=Path(params.teacher) / "checkpoint" / WEIGHTS[params.teacher_checkpoint],
        source_fingerprint=dataset.source_fingerprint,
        augment={"padding": augment.padding, "padding_mode": augment.padding_mode, "flip": augment.flip} if augment else None,
        normalisation={"student": [recipe.data.mean, recipe.data.std],
                       "teacher": [teacher_recipe.data.mean, teacher_recipe.data.std]},
        precision=runtime.precision, device_type=runtime.device.type,
        teacher_compiled=isinstance(method.teacher, CompiledInference),
        num_samples=samples, num_classes=len(dataset.classes), features=features_record(recipe.data, dataset),
    )
    folder = cache_root(recipe.data.cache_dir) / "teacher-logits" / key if mode in ("auto", "disk") else None
    if distributed is not None and not distributed.is_main:
        folder = None
    table_bytes = samples * train_loader.num_views * len(dataset.classes) * (2 if runtime.precision == "bf16" else 4)
    if mode == "auto" and table_bytes > AUTO_CACHE_LIMIT_BYTES:
        return  # too large to hold by default; ask for it explicitly with disk or memory
    method.cache = TeacherLogitCache(
        num_samples=samples, num_views=train_loader.num_views,
        num_classes=len(dataset.classes), dtype=torch.bfloat16 if runtime.precision == "bf16" else torch.float32,
        device=runtime.device, key=key, folder=folder)


def _check_model_fits(model: torch.nn.Module, name: str, dataset: Dataset, inputs: torch.Tensor) -> None:
    """One forward on two inputs, so a model that cannot take this data fails before any run starts."""
    model.eval()
    try:
        with torch.no_grad():
            logits = model(inputs[:2])
    except RuntimeError as error:
        if dataset.is_audio:
            what = f"{'x'.join(str(s) for s in inputs.shape[1:])} (CxFxT) log-mel inputs"
        else:
            what = f"{'x'.join(str(s) for s in dataset.train.images.shape[1:])} (HxWxC) images"
        reason = str(error).strip().splitlines()[0]
        raise KdlabError(f"model {name} cannot take the {what} of {dataset.name}: {reason}") from None
    finally:
        model.train()
    if tuple(logits.shape) != (2, len(dataset.classes)):
        raise KdlabError(f"model {name} gives outputs of shape {tuple(logits.shape)}, expected (2, {len(dataset.classes)})")


def make_optimizer(method: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    config = recipe.optim
    trainable = [p for p in method.parameters() if p.requires_grad]
    if config.no_decay_bn_bias:
        groups = [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": trainable, "weight_decay": config.weight_decay}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def train(recipe: Recipe, out: str | Path, *, force: bool = False, quiet: bool = False, on_epoch=None) -> dict:
    """Run ``recipe`` into the new run directory ``out``; return the summary. ``on_epoch(record)`` is called with
    each epoch's metrics record once it is saved, and may raise :class:`RunStopped`."""
    prepared = prepare(recipe)
    run = RunDir(Path(out))
    lock = None
    try:
        lock = _on_main(prepared, lambda: run.prepare_new(force))
        if prepared.is_main:
            atomic_write_text(run.config, dump_recipe(prepared.recipe))
        return _loop(prepared, run, quiet=quiet or not prepared.is_main, on_epoch=on_epoch)
    finally:
        if lock is not None:
            lock.release()


def resume(run_dir: str | Path, *, quiet: bool = False) -> dict:
    """Continue the run in ``run_dir`` from its last checkpoint; a completed run is returned as it is."""
    run = RunDir(Path(run_dir))
    if not run.config.is_file():
        if run.path.is_dir() and run._started_but_empty():
            raise KdlabError(f"cannot resume {run.path}: it was stopped before it started (no config.yaml); train it "
                             f"again with kdlab train RECIPE --out {run.path}")
        raise KdlabError(f"cannot resume {run.path}: it is not a kdlab run directory (no config.yaml)")
    prepared = prepare(load_recipe(run.config))
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
        return _loop(prepared, run, quiet=quiet or not prepared.is_main,
                     resume_from=run.checkpoint if has_checkpoint else None)
    finally:
        if lock is not None:
            lock.release()


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


def _loop(prepared: Prepared, run: RunDir, quiet: bool, resume_from: Path | None = None, on_epoch=None) -> dict:
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
    if resume_from is not None:
        state = checkpoint.restore_checkpoint(resume_from, method, optimizer)
        missing = [key for key in ("history", "best", "wall_seconds", "train_seconds", "train_images") if key not in state]
        if missing or not isinstance(state["history"], list):
            raise KdlabError(f"checkpoint {resume_from / checkpoint.STATE_FILE} is damaged: it has no "
                             f"{(missing or ['valid history'])[0]}")
        start_epoch, history, best = state["epoch"], state["history"], state["best"]
        wall, train_seconds, train_images = state["wall_seconds"], state["train_seconds"], state["train_images"]
        skipped = state.get("skipped_steps", [])
        run.write_metrics(history)
    session_start = time.perf_counter()

    def summary(status: str, error: str | None = None) -> dict:
        record = _summary(prepared, status, history, best, best_by, wall + time.perf_counter() - session_start,
                          train_images / train_seconds if train_seconds else None, error)
        record["skipped_steps"] = list(skipped)
        record["last_checkpoint_epoch"] = _checkpoint_epoch(run)
        return record

    run.write_summary(summary("running"))
    last_predictions: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    last_heads = None
    groups = {split: loader.groups for split, loader in prepared.eval_loaders.items()}
    try:
        for epoch in range(start_epoch, epochs):
            epoch_start = time.perf_counter()
            terms, correct, seen = train_epoch(prepared, optimizer, epoch, show_bar=show_bar, skipped=skipped)
            seconds = time.perf_counter() - epoch_start
            train_seconds += seconds
            train_images += seen
            record = {"epoch": epoch + 1, "lr": learning_rate(epoch * steps_per_epoch, steps_per_epoch, epochs, recipe.optim.lr, recipe.schedule)}
            record["train_loss"] = sum(terms.values())
            record.update({f"train_{name}": value for name, value in terms.items()})
            record["train_acc"] = correct / seen
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
                best = _selected(record)
                if writes:
                    checkpoint.save_tensors(run.checkpoint / "best.safetensors", method.export_state())
            if not quiet:
                _print_epoch(record, epochs)
            if writes and (last or (epoch + 1) % recipe.checkpoint.every == 0):
                _save_teacher_cache(method)
                checkpoint.save_checkpoint(run.checkpoint, epoch + 1, method, optimizer, {
                    "history": history, "best": best, "wall_seconds": wall + time.perf_counter() - session_start,
                    "train_seconds": train_seconds, "train_images": train_images, "skipped_steps": skipped,
                })
            run.write_metrics(history)
            run.write_summary(summary("running"))
            if on_epoch is not None:
                on_epoch(record)
        if not last_predictions:  # resumed after the last epoch's checkpoint: recompute the final predictions
            last_predictions, last_heads = evaluate_method(method, prepared.eval_loaders, runtime)
        if writes:
            run.predictions.mkdir(exist_ok=True)
            for split, (logits, labels) in last_predictions.items():
                extra = {} if groups[split] is None else {"groups": groups[split].cpu().numpy()}
                atomic_savez(run.predictions / f"{split}.npz", logits=logits.numpy(), labels=labels.numpy(), **extra)
            checkpoint.save_tensors(run.checkpoint / "model.safetensors", method.export_state())
        teacher = getattr(method, "teacher", None)
        teacher_predictions = {split: predict(teacher, loader, runtime) for split, loader in prepared.eval_loaders.items()} \
            if teacher is not None else None
        evaluation = {"checkpoint": "final", **evaluation_record(last_predictions, teacher_predictions, groups)}
        final = {**summary("completed"), "evaluation": evaluation}
        if last_heads is not None:
            final["inference_head"] = method.inference_head
            final["heads"] = {head: {split: metrics.evaluate_all(*per_head[head], groups[split])
                                     for split, per_head in last_heads.items()}
                              for head in next(iter(last_heads.values()))}
        run.write_summary(final)
        return final
    except TrainingDiverged as error:
        run.write_summary(summary("failed", str(error)))
        raise
    except RunStopped as stop:
        run.write_summary(summary(stop.status, str(stop)))
        raise
    except WriteError as error:
        try:  # the disk may have room for this small file even when a checkpoint did not fit
            run.write_summary(summary("failed", str(error)))
        except WriteError:
            pass
        raise
    except KeyboardInterrupt:
        run.write_summary(summary("interrupted", "interrupted by the user; continue with kdlab train --resume"))
        raise


class _ReadOnlyRunDir(RunDir):
    """The run directory as ranks > 0 of a data-parallel run see it: they read it (to resume), never write."""

    def write_metrics(self, history: list[dict]) -> None:
        pass

    def write_summary(self, summary: dict) -> None:
        pass


def _checkpoint_epoch(run: RunDir) -> int | None:
    """The epoch of the last good (published) checkpoint, or None."""
    try:
        return int(checkpoint.read_state(run.checkpoint)["epoch"])
    except (KdlabError, KeyError, ValueError, TypeError):
        return None


def _save_teacher_cache(method) -> None:
    """Write the teacher-logit cache; a cache that cannot be written is a warning (it only saves time)."""
    cache = getattr(method, "cache", None)
    if cache is None:
        return
    try:
        cache.save()
    except WriteError as error:
        warnings.warn(f"teacher-logit cache not saved: {error}", stacklevel=2)


def train_epoch(prepared: Prepared, optimizer, epoch: int, *, show_bar: bool = False, max_steps: int | None = None,
                skipped: list[dict] | None = None):
    """One epoch (or its first ``max_steps`` steps, for benchmarks); returns ({term: mean per sample}, correct
    count, samples seen).

    Every step's loss terms and gradient norm are checked for NaN and infinity (:data:`NONFINITE_CHECK_EVERY`). A
    bad step raises :class:`TrainingDiverged` naming the epoch, the step and the term (or the gradient), before
    anything of the epoch is saved; with ``train.nonfinite: skip`` it is skipped instead (no update, not counted in
    the epoch's means), recorded in ``skipped``, up to ``train.max_skipped_steps`` in the run."""
    recipe, runtime, method = prepared.recipe, prepared.runtime, prepared.method
    steps_per_epoch = len(prepared.train_loader)
    method.train()
    device = runtime.device
    term_sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
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
    bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{recipe.train.epochs}", leave=False,
               disable=not show_bar, file=sys.stderr, dynamic_ncols=True)
    with_keys = getattr(method, "cache", None) is not None
    for step, batch in enumerate(prepared.train_loader.batches(epoch, with_keys=with_keys)):
        if max_steps is not None and step >= max_steps:
            break
        inputs, labels = batch[0], batch[1]
        lr = learning_rate(epoch * steps_per_epoch + step, steps_per_epoch, recipe.train.epochs, recipe.optim.lr, recipe.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with runtime.autocast():
            logits, terms = trainer(inputs, labels, epoch, keys=batch[2]) if with_keys else trainer(inputs, labels, epoch)
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


def _selected(record: dict) -> dict:
    keys = ("epoch", "test_acc", "test_nll", "test_ece", "test_clip_acc", "val_acc", "val_nll", "val_ece", "val_clip_acc")
    return {k: record[k] for k in keys if k in record}


def _print_epoch(record: dict, epochs: int) -> None:
    parts = [f"epoch {record['epoch']:>3}/{epochs}", f"loss {record['train_loss']:.4f}", f"train_acc {record['train_acc']:.4f}"]
    if "val_acc" in record:
        parts.append(f"val_acc {record['val_acc']:.4f}")
    if "test_acc" in record:  # not on epochs without evaluation (train.eval_every)
        parts += [f"test_acc {record['test_acc']:.4f}", f"test_nll {record['test_nll']:.4f}"]
    parts += [f"{record['train_images_per_second']:.0f} img/s", f"{record['epoch_seconds']:.1f}s"]
    print("  ".join(parts), flush=True)


def _cache_record(method) -> dict | None:
    cache = getattr(method, "cache", None)
    if cache is None:
        return None
    return {"mode": "disk" if cache.folder is not None else "memory", "key": cache.key, "hits": cache.hits,
            "misses": cache.misses, "coverage": cache.coverage}


def _label_noise_record(recipe: Recipe, dataset: Dataset) -> dict | None:
    """The noise settings and how many train (and val) labels are actually wrong, or None without noise."""
    if recipe.data.label_noise is None:
        return None
    record = recipe.data.label_noise.model_dump()
    for name in ("train", "val"):
        split = getattr(dataset, name)
        if split is not None:
            record[f"{name}_corrupted"] = int((split.labels != split.clean_labels_or_labels).sum())
    return record


def _summary(prepared: Prepared, status, history, best, best_by, wall, images_per_second, error) -> dict:
    recipe, dataset = prepared.recipe, prepared.dataset
    return {
        "kdlab_version": kdlab.__version__,
        "git_sha": git_sha(),
        "status": status,
        "error": error,
        "method": recipe.method.name,
        "method_params": dict(recipe.method.model_extra or {}),
        "model": recipe.model.name,
        "dataset": dataset.name,
        "data": {
            "source": recipe.data.source,
            "path": recipe.data.path,
            "fingerprint": dataset.fingerprint,
            "classes": len(dataset.classes),
            "class_names": list(dataset.classes),
            "input_shape": list(dataset.train.images.shape[1:]),
            "features": features_record(recipe.data, dataset),
            "groups": {name: int(len(np.unique(split.groups))) for name in ("train", "val", "test")
                       if (split := getattr(dataset, name)) is not None and split.groups is not None} or None,
            "train": len(dataset.train.labels),
            "val": len(dataset.val.labels) if dataset.val is not None else 0,
            "test": len(dataset.test.labels),
            "label_noise": _label_noise_record(recipe, dataset),
        },
        "seed": recipe.seed,
        "epochs": recipe.train.epochs,
        "epochs_completed": len(history),
        "params": sum(p.numel() for p in prepared.model.parameters()),
        **prepared.runtime.describe(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "machine": machine_description(prepared.runtime.device),
        "wall_seconds": round(wall, 3),
        "train_images_per_second": images_per_second,
        "best_by": best_by,
        "teacher_cache": _cache_record(prepared.method),
        "frozen_networks": {name: getattr(getattr(prepared.method, name), "state", "eager")
                            for name in prepared.method.frozen},
        "final": _selected(history[-1]) if history else None,
        "best": best,
    }
