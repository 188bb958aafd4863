"""What ``kdlab bench`` trains: the configurations (student alone, or KD from a teacher), the settings every
contender shares, the recipe kdlab trains them with, and the untrained teacher runs they distil from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import kdlab
from kdlab import models
from kdlab.config import Recipe, dump_recipe, load_recipe
from kdlab.data import SOURCES, Dataset
from kdlab.io import atomic_write_json, atomic_write_text
from kdlab.store.checkpoint import save_tensors


DEFAULT_DATA = Path("..") / "shared" / "data" / "cifar10-jpeg"
TEACHER_NOTE = "teachers have random (untrained) weights: training speed does not depend on the weights"


@dataclass(frozen=True)
class Configuration:
    """What trains: ``student`` alone (``teacher`` None) or distilling from ``teacher``."""

    name: str
    student: str
    teacher: str | None = None

    @property
    def label(self) -> str:
        return f"KD {self.teacher} -> {self.student}" if self.teacher else f"student only {self.student} (CE)"


CONFIGURATIONS = {
    "student": Configuration("student", "resnet20"),
    "resnet56-resnet20": Configuration("resnet56-resnet20", "resnet20", "resnet56"),
    "resnet32x4-resnet8x4": Configuration("resnet32x4-resnet8x4", "resnet8x4", "resnet32x4"),
}


@dataclass(frozen=True)
class Settings:
    steps: int
    rounds: int
    warmup: int
    workers: int
    threads: int
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: float = 0.9
    tau: float = 4.0
    crop_padding: int = 4
    flip: bool = True
    seed: int = 0
    epoch_rounds: int = 0  # full epochs of student-only vs warm-cache KD (resnet56 -> resnet20), alternating


EPOCH_CHECK = Configuration("resnet56-resnet20", "resnet20", "resnet56")


QUICK = {"steps": 5, "rounds": 2, "warmup": 2, "epoch_rounds": 0, "pairs": ("student", "resnet56-resnet20")}
FULL = {"steps": 30, "rounds": 3, "warmup": 5, "epoch_rounds": 2, "pairs": tuple(CONFIGURATIONS)}


def make_recipe(data: dict, student: str, settings: Settings, *, teacher_dir: str | Path | None = None,
                teacher_cache: str = "off") -> Recipe:
    """The recipe kdlab trains: ``data`` is a recipe data section (source, path, val_size, options, mean, std, ...)
    to which the benchmark's augmentation is added."""
    method = {"name": "ce"} if teacher_dir is None else \
        {"name": "kd", "alpha": settings.alpha, "tau": settings.tau, "teacher": str(teacher_dir)}
    return load_recipe(raw={
        "seed": settings.seed,
        "data": {**data, "crop_padding": settings.crop_padding, "flip": settings.flip},
        "model": {"name": student},
        "method": method,
        "train": {"epochs": 240, "batch_size": settings.batch_size},
        "optim": {"lr": settings.lr, "momentum": settings.momentum, "weight_decay": settings.weight_decay},
        "schedule": {"name": "multistep", "milestones": [150, 180, 210], "gamma": 0.1},
        "runtime": {"progress": False, "threads": settings.threads,
                    "teacher_cache": teacher_cache if teacher_dir is not None else "off"},
    })


def untrained_teacher_run(model_name: str, dataset: Dataset, out_dir: str | Path, mean, std, *,
                          data: dict | None = None, seed: int = 0) -> Path:
    """Write a completed kdlab run directory whose network ``model_name`` has random weights (seeded), for
    ``dataset``'s task, trained (as its config says) with inputs normalised by ``mean``/``std``. ``data`` is the
    recipe data section to record (default: just the source, when ``dataset.name`` is one)."""
    out = Path(out_dir)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    section = dict(data) if data is not None else {"source": dataset.name if dataset.name in SOURCES else "folder"}
    section.update(mean=[float(m) for m in mean], std=[float(s) for s in std])
    recipe = load_recipe(raw={"seed": seed, "data": section, "model": {"name": model_name}, "method": {"name": "ce"},
                              "train": {"epochs": 1}})
    torch.manual_seed(seed)
    network = models.create(model_name, num_classes=len(dataset.classes), in_channels=dataset.train.images.shape[-1])
    atomic_write_text(out / "config.yaml", dump_recipe(recipe))
    save_tensors(out / "checkpoint" / "model.safetensors", network.state_dict())
    save_tensors(out / "checkpoint" / "best.safetensors", network.state_dict())
    atomic_write_json(out / "summary.json", {
        "kdlab_version": kdlab.__version__,
        "status": "completed",
        "note": "untrained: random weights written by kdlab bench (benchmark use only)",
        "method": "ce",
        "model": model_name,
        "dataset": dataset.name,
        "data": {"classes": len(dataset.classes), "class_names": list(dataset.classes),
                 "input_shape": list(dataset.train.images.shape[1:])},
        "seed": seed,
        "epochs": 0,
        "epochs_completed": 0,
    })
    return out
