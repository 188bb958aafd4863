"""A teacher from a run directory: kdlab rebuilds the network from the run's ``config.yaml`` and its safetensors
weights, and checks that it was trained on the student's task before anything trains against it.

A student reads its teacher's files once, when it starts: from then on the teacher lives in memory, so a teacher
run directory deleted (or whose weights are replaced) while a student trains does not change that student, which
finishes as it began; its summary records the sha256 of the very bytes it loaded (``teachers.<name>.weights_sha256``).
A student resumed after its teacher is gone stops with one line naming the missing teacher.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load

from kdlab import models
from kdlab.config import Recipe, load_recipe
from kdlab.data import Dataset
from kdlab.errors import KdlabError
from kdlab.teacher.module import Teacher
from kdlab.store.checkpoint import load_state_into
from kdlab.store.rundir import RunDir

WEIGHTS = {"final": "model.safetensors", "best": "best.safetensors"}


def summary_data(run: RunDir, summary: dict, role: str = "") -> dict:
    """The ``data`` record of a completed run's summary (class count, class names, input shape), checked enough to
    rebuild its network; a damaged one is a one-line error naming ``role`` (e.g. "teacher ") and the file."""
    data = summary.get("data")
    shape = data.get("input_shape") if isinstance(data, dict) else None
    classes = data.get("classes") if isinstance(data, dict) else None
    if (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1 or not isinstance(shape, list)
            or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise KdlabError(f"{role}{run.path}: {run.summary.name} has no valid data record (classes, input_shape)")
    return data


def load_teacher(run_dir, dataset: Dataset, checkpoint: Literal["final", "best"] = "final", *,
                 input_mean=None, input_std=None, same_dataset: bool = True, features: dict | None = None,
                 compile: bool = False, cache=None) -> Teacher:
    """The network of the completed run ``run_dir`` as a frozen :class:`~kdlab.teacher.module.Teacher`, on the CPU.

    Refused with a one-line error: a folder that is not a completed kdlab run, and a teacher whose class count,
    class names, input shape (H x W x C, or the waveform length L), audio features (sample rate and log-mel
    settings, compared with the student's ``features`` when given) or (with ``same_dataset``) dataset differ from
    the student's ``dataset``.
    With the student's input statistics (``input_mean``, ``input_std``) differing from the teacher's, the teacher is
    re-normalised (:class:`~kdlab.teacher.module.Renormalise`), so it always sees inputs normalised as in its own
    training. ``compile`` and ``cache`` are :class:`~kdlab.teacher.module.Teacher`'s.

    ``run_dir`` may also be a teacher without a run directory (a :class:`~kdlab.teacher.spec.LibraryTeacherSpec`
    or its recipe mapping), built by :func:`kdlab.teacher.library.library_teacher`.
    """
    if not isinstance(run_dir, (str, Path)):
        from kdlab.teacher.library import library_teacher
        from kdlab.teacher.spec import parse_teacher

        teacher = library_teacher(parse_teacher(run_dir), dataset, input_mean=input_mean, input_std=input_std,
                                  compile=compile)
        teacher.cache = cache
        return teacher
    network, recipe, _ = load_network(run_dir, dataset, checkpoint, same_dataset=same_dataset, features=features)
    return Teacher(network, renormalise=(input_mean, input_std, recipe.data.mean, recipe.data.std), compile=compile,
                   cache=cache)


def load_network(run_dir: str | Path, dataset: Dataset, checkpoint: Literal["final", "best"] = "final", *,
                 same_dataset: bool = True, features: dict | None = None) -> tuple[torch.nn.Module, Recipe, str]:
    """The checked network of the completed run ``run_dir`` with its weights (see :func:`load_teacher`), the
    run's recipe and the sha256 of the weights file's bytes the network was loaded from."""
    run = RunDir(Path(run_dir))
    if not run.path.exists():
        raise KdlabError(f"teacher run directory not found: {run.path} (moved or deleted?)")
    summary = run.completed_summary("teacher ")
    data = summary_data(run, summary, "teacher ")
    student_shape = list(dataset.train.images.shape[1:])
    if data.get("classes") != len(dataset.classes):
        raise KdlabError(f"teacher {run.path} has {data.get('classes')} classes, the student's data {dataset.name} has {len(dataset.classes)}")
    if data.get("class_names", list(dataset.classes)) != list(dataset.classes):
        raise KdlabError(f"teacher {run.path} was trained on other class names than {dataset.name}'s")
    if data.get("input_shape", student_shape) != student_shape:
        raise KdlabError(f"teacher {run.path} takes {data.get('input_shape')} (HxWxC) inputs, the student's data has {student_shape}")
    if same_dataset and summary.get("dataset") != dataset.name:
        raise KdlabError(f"teacher {run.path} was trained on {summary.get('dataset')}, the student trains on {dataset.name}")
    teacher_features = data.get("features")
    if dataset.is_audio != (teacher_features is not None):
        raise KdlabError(f"teacher {run.path} was trained on {'audio' if teacher_features else 'images'}, the "
                         f"student's data {dataset.name} is {'audio' if dataset.is_audio else 'images'}")
    if features is not None and teacher_features is not None and teacher_features != features:
        differ = sorted(k for k in set(features) | set(teacher_features) if features.get(k) != teacher_features.get(k))
        raise KdlabError(f"teacher {run.path} was trained on other audio features than the student's: "
                         f"{', '.join(f'{k} {teacher_features.get(k)} vs {features.get(k)}' for k in differ)}")
    recipe = load_recipe(run.config)
    in_channels = 1 if dataset.is_audio else student_shape[-1]
    teacher = models.create(recipe.model.name, num_classes=len(dataset.classes), in_channels=in_channels,
                            options=recipe.model.options)
    weights = run.checkpoint / WEIGHTS[checkpoint]
    tensors, digest = read_weights(weights)
    load_state_into(teacher, tensors, weights)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher, recipe, digest


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a teacher's weights file and the sha256 of the bytes they were read from (read once, so the
    checksum is of what was loaded even if the file is replaced meanwhile); a missing or unreadable file is a
    one-line error naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KdlabError(f"teacher weights not found: {path} (moved or deleted?)") from None
    except OSError as error:
        raise KdlabError(f"cannot read the teacher weights {path}: {error.strerror or error}") from None
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise KdlabError(f"teacher weights {path} are not a valid safetensors file ({error})") from None
    return tensors, hashlib.sha256(data).hexdigest()
