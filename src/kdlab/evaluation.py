"""Re-evaluating finished runs: rebuild a run's network from its directory, on its own data or on other data with the
same classes, and compute predictions, penultimate features and every metric.

This is what ``kdlab eval`` and ``kdlab report`` stand on; functional-API users can call it from their own scripts::

    run = load_run("runs/ce-s0")
    dataset = load_run_data(run)                      # or load_run_data(run, ["data.path=/other/folder"])
    logits, labels = predict(run.model, eval_loader(run, dataset.test), run.runtime)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from kdlab import models
from kdlab.config import Recipe, apply_overrides, load_recipe
from kdlab.data import Dataset, Split
from kdlab.data.inputs import check_modality, features_record, recipe_dataset
from kdlab.data.loader import DeviceLoader
from kdlab.errors import KdlabError
from kdlab.io import atomic_savez, atomic_write_json
from kdlab.teacher.run import WEIGHTS, summary_data
from kdlab.train.checkpoint import load_state_into, load_tensors
from kdlab.train.evaluate import evaluation_record, predict
from kdlab.train.rundir import RunDir
from kdlab.train.runtime import Runtime, resolve_runtime


@dataclass
class LoadedRun:
    """A run directory's recipe, summary and network (eval mode, on ``runtime.device``)."""

    path: Path
    recipe: Recipe
    summary: dict
    model: torch.nn.Module
    runtime: Runtime
    checkpoint: str


def load_run(run_dir: str | Path, checkpoint: Literal["final", "best"] = "final", device: str | None = None) -> LoadedRun:
    """Rebuild the network of the completed run ``run_dir`` from ``config.yaml`` and its safetensors weights."""
    run = RunDir(Path(run_dir))
    summary = run.completed_summary()
    if checkpoint not in WEIGHTS:
        raise KdlabError(f"checkpoint must be one of {', '.join(WEIGHTS)}, got {checkpoint!r}")
    recipe = load_recipe(run.config)
    if device is not None:
        recipe.runtime.device = device
    runtime = resolve_runtime(recipe.runtime)
    data = summary_data(run, summary)
    in_channels = 1 if data.get("features") else int(data["input_shape"][-1])  # audio: one log-mel channel
    model = models.create(recipe.model.name, num_classes=int(data["classes"]), in_channels=in_channels)
    weights = run.checkpoint / WEIGHTS[checkpoint]
    load_state_into(model, load_tensors(weights), weights)
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    return LoadedRun(run.path, recipe, summary, model, runtime, checkpoint)


def load_run_data(run: LoadedRun, overrides: list[str] = ()) -> Dataset:
    """The run's dataset (its recipe's data section, with ``data.*`` overrides), checked to have the run's classes
    and input shape. Normalisation always stays the run's own."""
    if any(not text.startswith("data.") for text in overrides):
        bad = next(text for text in overrides if not text.startswith("data."))
        raise KdlabError(f"eval overrides change the data only (data.path=..., data.source=...), got {bad!r}")
    raw = apply_overrides(run.recipe.to_dict(), list(overrides))
    data = load_recipe(raw=raw).data if overrides else run.recipe.data
    dataset = recipe_dataset(data, run.recipe.seed)
    expected = run.summary["data"]
    if list(dataset.classes) != list(expected.get("class_names", dataset.classes)):
        raise KdlabError(f"{dataset.name} has classes {list(dataset.classes)[:4]}..., the run {run.path} was trained "
                         f"on {expected.get('class_names', [])[:4]}...: evaluation needs the same classes in the same order")
    if list(dataset.image_shape) != list(expected["input_shape"]):
        what = "samples long waveforms" if dataset.is_audio else "(HxWxC) images"
        raise KdlabError(f"{dataset.name} has {list(dataset.image_shape)} {what}, the run {run.path} takes "
                         f"{expected['input_shape']}")
    check_modality(data, dataset)
    features = features_record(data, dataset)
    if features != expected.get("features"):
        raise KdlabError(f"{dataset.name} gives other inputs (audio features {features}) than the run {run.path} "
                         f"was trained on ({expected.get('features')})")
    return dataset


def eval_loader(run: LoadedRun, split: Split, batch_size: int | None = None) -> DeviceLoader:
    """Un-augmented batches of ``split`` in order, normalised (and, for audio, turned into features) as the run was
    trained."""
    recipe = run.recipe
    features = None
    if split.is_audio:
        from kdlab.data.audio_features import LogMel

        features = LogMel(run.summary["data"]["features"]["sample_rate"],
                          **recipe.data.features.model_dump()).to(run.runtime.device)
    return DeviceLoader(split, run.runtime.device, batch_size or recipe.train.eval_batch_size, mean=recipe.data.mean,
                        std=recipe.data.std, channels_last=run.runtime.channels_last, features=features)


def penultimate(model: torch.nn.Module, loader: DeviceLoader, runtime: Runtime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features N x D float32, logits N x K float32, labels N) of the whole split, in order; features are the
    activations entering the final linear layer (``model(x, return_features=True)``)."""
    features, logits = [], []
    with torch.inference_mode(), runtime.autocast():
        for inputs, _ in loader.batches(0):
            z, h = model(inputs, return_features=True)
            logits.append(z.float().cpu())
            features.append(h.float().cpu())
    return torch.cat(features).numpy(), torch.cat(logits).numpy(), loader.labels.cpu().numpy()


def evaluate_run(run_dir: str | Path, overrides: list[str] = (), checkpoint: Literal["final", "best"] = "final",
                 splits: list[str] | None = None, out: str | Path | None = None) -> dict:
    """Evaluate a finished run on its data (or other data with the same classes); write ``metrics.json`` and
    ``predictions/<split>.npz`` under ``out`` (default ``RUN_DIR/eval-<checkpoint>``) and return the record.

    The record has the same metrics as a run's ``summary.json["evaluation"]``: every metric per split, temperature
    scaling fitted on val and applied to test (when both are evaluated), and fidelity to the run's teacher.
    """
    run = load_run(run_dir, checkpoint)
    dataset = load_run_data(run, list(overrides))
    available = {name: getattr(dataset, name) for name in ("train", "val", "test") if getattr(dataset, name) is not None}
    chosen = splits or [name for name in ("val", "test") if name in available]
    missing = [name for name in chosen if name not in available]
    if missing:
        raise KdlabError(f"{dataset.name} has no {missing[0]} split (it has {', '.join(available)})")
    predictions = {name: predict(run.model, eval_loader(run, available[name]), run.runtime) for name in chosen}
    groups = {name: None if available[name].groups is None else torch.from_numpy(available[name].groups)
              for name in chosen}
    teacher_predictions = None
    method_params = run.recipe.method.model_extra or {}
    teacher_dir = method_params.get("teacher")
    if teacher_dir:
        from kdlab.teacher.run import load_teacher

        # Other data with the same classes is fine here; the teacher sees inputs normalised as in its training.
        teacher = load_teacher(teacher_dir, dataset, method_params.get("teacher_checkpoint", "final"),
                               input_mean=run.recipe.data.mean, input_std=run.recipe.data.std,
                               same_dataset=False).to(run.runtime.device)
        if run.runtime.channels_last:
            teacher.to(memory_format=torch.channels_last)
        teacher_predictions = {name: predict(teacher, eval_loader(run, available[name]), run.runtime) for name in chosen}
    record = {
        "run": str(run.path),
        "checkpoint": checkpoint,
        "dataset": dataset.name,
        "data": {"fingerprint": dataset.fingerprint, "overrides": list(overrides)},
        "splits": {name: len(available[name]) for name in chosen},
        **evaluation_record(predictions, teacher_predictions, groups),
    }
    out = Path(out) if out is not None else run.path / f"eval-{checkpoint}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions").mkdir(exist_ok=True)
    for name, (logits, labels) in predictions.items():
        extra = {} if groups[name] is None else {"groups": groups[name].numpy()}
        atomic_savez(out / "predictions" / f"{name}.npz", logits=logits.numpy(), labels=labels.numpy(), **extra)
    atomic_write_json(out / "metrics.json", record)
    return record
