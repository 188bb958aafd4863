"""What a run records about itself: the epoch line, the selected metrics and ``summary.json``."""

from __future__ import annotations

import platform

import numpy as np
import torch

import kdlab
from kdlab.config import Recipe
from kdlab.data import Dataset
from kdlab.train.inputs import features_record
from kdlab.errors import KdlabError
from kdlab.store import checkpoint
from kdlab.store.rundir import RunDir
from kdlab.version import git_sha, machine_description


def checkpoint_epoch(run: RunDir) -> int | None:
    """The epoch of the last good (published) checkpoint, or None."""
    try:
        return int(checkpoint.read_state(run.checkpoint)["epoch"])
    except (KdlabError, KeyError, ValueError, TypeError):
        return None


def selected(record: dict) -> dict:
    keys = ("epoch", "test_acc", "test_nll", "test_ece", "test_clip_acc", "val_acc", "val_nll", "val_ece", "val_clip_acc")
    return {k: record[k] for k in keys if k in record}


def print_epoch(record: dict, epochs: int) -> None:
    parts = [f"epoch {record['epoch']:>3}/{epochs}", f"loss {record['train_loss']:.4f}", f"train_acc {record['train_acc']:.4f}"]
    if "val_acc" in record:
        parts.append(f"val_acc {record['val_acc']:.4f}")
    if "test_acc" in record:  # not on epochs without evaluation (train.eval_every)
        parts += [f"test_acc {record['test_acc']:.4f}", f"test_nll {record['test_nll']:.4f}"]
    parts += [f"{record['train_images_per_second']:.0f} img/s", f"{record['epoch_seconds']:.1f}s"]
    print("  ".join(parts), flush=True)


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


def _augment_record(loader) -> dict | None:
    """The image augmentation the training loader ran and the fixed view of un-augmented inputs (None: none)."""
    record = {"train": getattr(loader.augment, "record", lambda: None)(),
              "eval_view": getattr(loader.fixed_view, "record", lambda: None)()}
    return record if any(record.values()) else None


def run_summary(prepared, status, history, best, best_by, wall, images_per_second, error) -> dict:
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
            "residency": "stream" if dataset.streamed else "device",
            "augment": _augment_record(prepared.train_loader),
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
        "teacher_cache": prepared.teachers.cache_record() if prepared.teachers else None,
        "frozen_networks": prepared.teachers.states() if prepared.teachers else {},
        **({"teachers": prepared.teachers.records()} if prepared.teachers and prepared.teachers.records() else {}),
        "final": selected(history[-1]) if history else None,
        "best": best,
    }
