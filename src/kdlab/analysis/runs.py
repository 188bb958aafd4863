"""Reading finished runs: the one place that knows a run directory's files.

* rebuilding a run's network from its directory (:func:`load_run`), on its own data or on other data with the same
  classes (:func:`load_run_data`), with its predictions and penultimate features (:func:`penultimate`);
* collecting the completed runs of study folders, pipeline folders or run directories (:func:`collect_runs`) and
  every metric of one run (:func:`run_metrics`), from its predictions or, for an archived run, its summary;
* the arrays an archive stored (:func:`read_analysis`, :func:`stored_projection`, :func:`stored_reliability`) and
  Mueller et al.'s projection of a run (:func:`run_projection`).

This is what ``kdlab eval``, ``kdlab report``, ``kdlab archive`` and the claims report stand on; functional-API users
can call it from their own scripts::

    run = load_run("runs/ce-s0")
    dataset = load_run_data(run)                      # or load_run_data(run, ["data.path=/other/folder"])
    logits, labels = predict(run.model, eval_loader(run, dataset.test), run.runtime)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from kdlab import metrics, models
from kdlab.config import Recipe, apply_overrides, load_recipe
from kdlab.data import Dataset, Split
from kdlab.train.inputs import check_modality, eval_view, features_record, recipe_dataset
from kdlab.data.loader import DeviceLoader
from kdlab.errors import KdlabError
from kdlab.io import read_predictions
from kdlab.metrics import temperature_scaling
from kdlab.teacher.run import WEIGHTS, summary_data
from kdlab.store.checkpoint import load_state_into, load_tensors
from kdlab.store.rundir import RunDir
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
    model = models.create(recipe.model.name, num_classes=int(data["classes"]), in_channels=in_channels,
                          options=recipe.model.options)
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
    loader = DeviceLoader
    if not isinstance(split.images, np.ndarray):  # a streamed split: image files, read batch by batch
        from functools import partial

        from kdlab.data.stream import StreamLoader

        loader = partial(StreamLoader, workers=recipe.data.stream_workers)
    return loader(split, run.runtime.device, batch_size or recipe.train.eval_batch_size, mean=recipe.data.mean,
                  std=recipe.data.std, channels_last=run.runtime.channels_last, features=features,
                  fixed_view=eval_view(recipe.data, None if split.is_audio else tuple(split.images.shape[1:])))


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


# ---------------------------------------------------------------------------------------------------- collecting


STUDY_FILE = "study.json"


@dataclass
class RunEntry:
    path: Path
    summary: dict
    group: str
    seed: int | None
    metrics: dict = field(default_factory=dict)
    spread: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return self.summary["dataset"], self.summary["model"], self.group


def collect_runs(paths: list[str | Path]) -> tuple[list[RunEntry], str | None]:
    """The completed runs under ``paths`` (study folders, pipeline folders or run directories) and the study's
    baseline group, if a study named one."""
    entries: list[RunEntry] = []
    baseline = None
    for path in map(Path, paths):
        if not path.exists():
            raise KdlabError(f"report: {path} does not exist")
        study = path / STUDY_FILE
        if study.is_file():
            record = json.loads(study.read_text())
            baseline = baseline or record.get("baseline")
            for run in record["runs"]:
                entry = _entry(Path(run.get("dir") or path / run["run"]), run.get("group"), run.get("seed"), from_study=True)
                if entry is not None:
                    entries.append(entry)
        elif (path / "summary.json").is_file():
            entry = _entry(path, None, None)
            if entry is None:
                raise KdlabError(f"report: {path} has not completed")
            entries.append(entry)
        else:
            found = [_entry(child, None, None) for child in sorted(path.iterdir()) if (child / "summary.json").is_file()]
            entries += [entry for entry in found if entry is not None]
    if not entries:
        raise KdlabError(f"report: no completed runs in {', '.join(map(str, paths))}")
    return entries, baseline


def _entry(path: Path, group: str | None, seed: int | None, from_study: bool = False) -> RunEntry | None:
    """A completed run; a study's shared stage keeps seed None (it is never paired), other runs their own seed."""
    summary = RunDir(path).read_summary()
    if summary is None or summary.get("status") != "completed":
        return None
    return RunEntry(path, summary, group or default_group(summary), seed if from_study else summary.get("seed"))


def provenance(summaries: list[dict]) -> str:
    """Where runs ran: "Intel Xeon, 2 cores, x86_64 with torch 2.14.1+cpu, precision bf16 (30 runs); ..." for
    each distinct (machine, torch, precision), most runs first, so results from several machines say so."""
    counts: dict[tuple, int] = {}
    for summary in summaries:
        key = (summary.get("machine") or "?", summary.get("torch_version") or "?", summary.get("precision") or "?")
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return "; ".join(f"{machine} with torch {torch_version}, precision {precision} ({n} run{'s' * (n != 1)})"
                     for (machine, torch_version, precision), n in ordered) or "?"


def default_group(summary: dict) -> str:
    """A name for runs that differ only by seed: method and hyper-parameters (teacher folders left out), noise."""
    params = {k: v for k, v in summary.get("method_params", {}).items() if k not in ("teacher", "teacher_checkpoint")}
    name = summary["method"] + "".join(f" {k}={v}" for k, v in sorted(params.items()))
    noise = summary.get("data", {}).get("label_noise")
    if noise:
        name += f" noise={noise['kind']}:{noise['rate']}"
    return name


def resolve_classes(summary: dict, classes: list[str] | None) -> tuple[list[int], list[str]]:
    names = summary["data"]["class_names"]
    if classes is None:
        if len(names) < 3:
            raise KdlabError("report: the projection needs at least three classes")
        return [0, 1, 2], names[:3]
    ids = []
    for item in classes:
        if item in names:
            ids.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            ids.append(int(item))
        else:
            raise KdlabError(f"report: --classes: {item!r} is neither a class name nor an index below {len(names)}")
    if len(ids) != 3 or len(set(ids)) != 3:
        raise KdlabError("report: --classes needs three different classes")
    return ids, [names[i] for i in ids]


# ---------------------------------------------------------------------------------------------------- metrics


HEAD_METRICS = ("acc", "nll", "ece")


def run_metrics(entry: RunEntry, selection: str) -> dict:
    """Every metric of one run (see the module docstring for the selection convention)."""
    summary = entry.summary
    result = {"wall_seconds": summary.get("wall_seconds", math.nan),
              "images_per_second": summary.get("train_images_per_second") or math.nan}
    robustness = summary.get("robustness")
    if robustness is not None and selection == "final":  # PGD accuracy of the final weights (recipe robustness:)
        result["robust_acc"] = robustness["robust_acc"]
    if selection == "best":
        best = summary["best"]
        return {**result, "acc": best["test_acc"], "nll": best["test_nll"], "ece": best["test_ece"]}
    for head, per_split in (summary.get("heads") or {}).items():  # online runs: every peer, leader, ensemble
        result.update({f"{name}@{head}": per_split["test"][name] for name in HEAD_METRICS if name in per_split.get("test", {})})
    predictions = {}
    for split in ("val", "test"):
        file = entry.path / "predictions" / f"{split}.npz"
        if file.is_file():
            arrays = read_predictions(file)
            predictions[split] = (arrays["logits"], arrays["labels"])
    if "test" not in predictions:
        return {**result, **_summary_metrics(entry)}
    logits, labels = predictions["test"]
    result.update(metrics.evaluate_all(logits, labels))
    if "val" in predictions:
        report = temperature_scaling.calibration_report(*predictions["val"], logits, labels)
        result.update(temperature=report["temperature"], ece_ts=report["after"]["ece"], nll_ts=report["after"]["nll"])
    fidelity = summary.get("evaluation", {}).get("fidelity", {}).get("test")
    teacher = _teacher_test_predictions(entry) if fidelity is None else None
    if teacher is not None and np.array_equal(teacher[1], labels):
        fidelity = metrics.fidelity_all(logits, teacher[0])
    result.update(fidelity or {})
    return result


def _summary_metrics(entry: RunEntry) -> dict:
    """The final-epoch metrics a run recorded in its summary (what its predictions give; an archived run keeps
    no predictions, see :mod:`kdlab.analysis.archive`)."""
    evaluation = entry.summary.get("evaluation") or {}
    if "test" not in evaluation:
        raise KdlabError(f"report: {entry.path} has neither predictions/test.npz nor test metrics in its summary")
    result = dict(evaluation["test"])
    calibration = evaluation.get("calibration")
    if calibration is not None:
        result.update(temperature=calibration["temperature"], ece_ts=calibration["after"]["ece"],
                      nll_ts=calibration["after"]["nll"])
    result.update((evaluation.get("fidelity") or {}).get("test") or {})
    return result


def _teacher_test_predictions(entry: RunEntry):
    """The teacher run's saved test predictions (its final weights, its own normalisation: what a student with
    ``teacher_checkpoint: final`` distilled from); None for a best-checkpoint teacher or when missing."""
    params = entry.summary.get("method_params", {})
    teacher = params.get("teacher") if params.get("teacher_checkpoint", "final") == "final" else None
    file = Path(teacher) / "predictions" / "test.npz" if teacher else None
    if file is None or not file.is_file():
        return None
    arrays = read_predictions(file)
    return arrays["logits"], arrays["labels"]


# ---------------------------------------------------------------------------------------------------- stored analysis


ANALYSIS_FILE = "analysis.npz"


def read_analysis(run: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays of a run's ``analysis.npz`` (None if it has none), read without pickle."""
    path = Path(run) / ANALYSIS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError) as error:
        raise KdlabError(f"{path}: not a readable analysis file ({type(error).__name__}: {error})") from None


def stored_projection(run: str | Path, class_ids: list[int], variant: str, per_class: int) -> dict | None:
    """The projection an archive stored for exactly these classes, variant and sample count, else None."""
    stored = read_analysis(run)
    if stored is None or "projection_classes" not in stored:
        return None
    if (stored["projection_classes"].tolist() != list(class_ids) or str(stored["projection_variant"]) != variant
            or int(stored["projection_per_class"]) != per_class):
        return None
    return {split: {key[len(f"projection_{split}_"):]: (float(value) if value.ndim == 0 else value)
                    for key, value in stored.items() if key.startswith(f"projection_{split}_")}
            for split in ("train", "test")}


def stored_reliability(run: str | Path) -> tuple[dict, dict] | None:
    """The reliability statistics an archive stored (before, after temperature scaling), else None."""
    stored = read_analysis(run)
    if stored is None or "reliability_count" not in stored:
        return None
    return ({k: stored[f"reliability_{k}"] for k in ("edges", "count", "accuracy", "confidence")},
            {k: stored[f"reliability_ts_{k}"] for k in ("edges", "count", "accuracy", "confidence")})


def run_projection(entry: RunEntry, classes: list[int], variant: str, per_class: int) -> dict:
    """Template-plane projections of ``per_class`` train and test samples of each of ``classes``, and their spread
    ratios (the plane is fitted once, on train, and reused for test)."""
    from kdlab.analysis.projection import TemplatePlane, select_per_class, spread_ratio, spread_ratio_centroids

    stored = stored_projection(entry.path, classes, variant, per_class)
    if stored is not None:
        return stored
    if not (entry.path / "checkpoint").is_dir():
        raise KdlabError(f"report: {entry.path} keeps no checkpoint and no projection of classes {classes} "
                         f"(variant {variant}, {per_class} per class); report it with those, or with --no-plots")
    run = load_run(entry.path)
    dataset = load_run_data(run)
    weight = run.model.classifier.weight.detach().float().cpu().numpy()
    bias = run.model.classifier.bias.detach().float().cpu().numpy() if run.model.classifier.bias is not None else None
    result, plane = {}, None
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        truth = split.clean_labels_or_labels
        index = select_per_class(truth, classes, per_class, seed=0)
        features, _, _ = penultimate(run.model, eval_loader(run, Split(split.images[index], truth[index])), run.runtime)
        if plane is None:
            plane = TemplatePlane().fit(weight, bias, classes, variant, features=features, labels=truth[index])
        points = plane.transform(features)
        result[name] = {
            "points": points, "labels": truth[index], "templates": plane.template_points,
            "spread_ratio": spread_ratio(points, truth[index], plane.template_points, classes),
            "spread_ratio_centroids": spread_ratio_centroids(points, truth[index], classes),
        }
    return result
