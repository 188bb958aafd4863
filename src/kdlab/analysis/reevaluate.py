"""``kdlab eval RUN_DIR``: re-evaluate a finished run (its final or best weights) on its own data or on other data
with the same classes, with every metric, temperature scaling and fidelity to its teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from kdlab.analysis.runs import eval_loader, load_run, load_run_data
from kdlab.errors import KdlabError
from kdlab.io import atomic_savez, atomic_write_json
from kdlab.train.predictions import evaluation_record, predict


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
