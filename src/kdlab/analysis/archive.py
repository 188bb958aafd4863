"""``kdlab archive STUDY_DIR | RUN_DIR... --out DIR``: what reports need of finished runs, small enough to commit.

For every completed run (of a study folder, with its ``study.json`` and ``study.yaml``, or given directly) the
archive keeps ``config.yaml``, ``summary.json`` and ``metrics.jsonl`` unchanged, and writes ``analysis.npz``:

* ``reliability_*`` and ``reliability_ts_*``: the reliability-diagram statistics of the run's test predictions
  (:func:`kdlab.metrics.calibration.reliability_bins`: ``edges``, ``count``, ``accuracy``, ``confidence``), before and
  after temperature scaling with the temperature the run fitted on its val split;
* ``test_predicted``, ``test_labels``, ``test_confidence``: per test example, the predicted class, the true class
  and the predicted class's probability (so a reader can run a McNemar test or a bootstrap between any two runs);
* ``projection_*``: Mueller et al.'s penultimate-layer projection (:func:`kdlab.analysis.runs.run_projection`) of
  ``per_class`` train and test samples of three classes: points, labels, templates and spread ratios, with the
  ``classes``, ``variant`` and ``per_class`` it was made with.

Checkpoints and predictions stay behind (a CIFAR-sized run's predictions are about 600 kB; its archive is about
20 kB). ``kdlab report`` reads an archive like the runs themselves: every metric comes from ``summary.json``
(the same final-epoch numbers the predictions give), the plots from ``analysis.npz``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from kdlab.errors import KdlabError
from kdlab.analysis.runs import ANALYSIS_FILE, collect_runs, resolve_classes, run_projection
from kdlab.io import WriteError, atomic_savez, atomic_write_bytes, atomic_write_json, fsync_dir, read_predictions

KEPT_FILES = ("config.yaml", "summary.json", "metrics.jsonl")
STUDY_FILES = ("study.json", "study.yaml")
STAGING = ".archive-staging"  # under --out: runs being written, and the previous archive of a run being replaced


def archive(paths: list[str | Path], out: str | Path, classes: list[str] | None = None, variant: str = "A",
            per_class: int = 100) -> list[Path]:
    """Archive the completed runs under ``paths`` into ``out`` (a study keeps its layout); return the archived
    run folders. Archiving again replaces each run's files with the current ones.

    Each run is written into ``out/.archive-staging/`` and renamed into place when complete, so whatever stops
    the command (a full disk, a kill) leaves every run of the archive complete or absent, never half written; a
    failed write is a one-line error. The study's record is written after its runs."""
    entries, _ = collect_runs(paths)
    out = Path(out)
    if any(Path(p).resolve() == out.resolve() for p in paths):
        raise KdlabError(f"archive: --out {out} is one of the folders being archived")
    class_ids, _ = resolve_classes(entries[0].summary, classes)
    analyses = [_analysis(entry, class_ids, variant, per_class) for entry in entries]  # what can fail, first
    staging = out / STAGING
    try:
        out.mkdir(parents=True, exist_ok=True)
        _recover(staging, out)
        written = [_publish(entry.path, analysis, staging, out) for entry, analysis in zip(entries, analyses)]
        for path in map(Path, paths):
            if (path / "study.json").is_file():
                _archive_study_record(path, out)
        if staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()
    except OSError as error:
        raise WriteError(f"archive: cannot write {error.filename or out}: {error.strerror or error}") from None
    return written


def _publish(run: Path, analysis: dict[str, np.ndarray], staging: Path, out: Path) -> Path:
    """Write the archive of ``run`` into ``staging`` and rename it into ``out``; a run archived before is moved
    aside first and deleted after (a kill in between leaves the run absent, and the next archive restores it)."""
    target, new, old = out / run.name, staging / run.name, staging / f"{run.name}.old"
    _remove(new)
    new.mkdir(parents=True)
    try:
        for name in KEPT_FILES:
            if (run / name).is_file():
                atomic_write_bytes(new / name, (run / name).read_bytes())
        atomic_savez(new / ANALYSIS_FILE, compressed=True, **analysis)
    except BaseException:
        _remove(new)
        raise
    if target.exists():
        _remove(old)
        os.rename(target, old)
    os.rename(new, target)
    fsync_dir(out)
    _remove(old)
    return target


def _recover(staging: Path, out: Path) -> None:
    """Clear what an archive stopped midway left in ``staging``: the previous archive of a run that was being
    replaced goes back into place when the new one never arrived; unfinished new ones go."""
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        target = out / entry.name.removesuffix(".old")
        if entry.name.endswith(".old") and not target.exists():
            os.rename(entry, target)
        else:
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


def _archive_study_record(study: Path, out: Path) -> None:
    """The study's recipe and record, with the runs' folders made relative to the archive (run names)."""
    record = json.loads((study / "study.json").read_text())
    record["out"] = "."
    for run in record["runs"]:
        run.pop("dir", None)
    if (study / "study.yaml").is_file():
        atomic_write_bytes(out / "study.yaml", (study / "study.yaml").read_bytes())
    atomic_write_json(out / "study.json", record)


def _analysis(entry, class_ids: list[int], variant: str, per_class: int) -> dict[str, np.ndarray]:
    from kdlab.metrics.calibration import reliability_bins

    predictions = entry.path / "predictions" / "test.npz"
    if not predictions.is_file():
        raise KdlabError(f"archive: {entry.path} has no predictions/test.npz (an archive cannot be archived again)")
    arrays = read_predictions(predictions)
    logits, labels = arrays["logits"].astype(np.float64), arrays["labels"]
    temperature = entry.summary.get("evaluation", {}).get("calibration", {}).get("temperature", 1.0)
    result = {f"reliability_{k}": v for k, v in reliability_bins(logits, labels).items()}
    result.update({f"reliability_ts_{k}": v for k, v in reliability_bins(logits / temperature, labels).items()})
    result["temperature"] = np.float64(temperature)
    # per-example test results, for a reader's own McNemar test or bootstrap: predicted class, true class and the
    # predicted class's probability (float16: three digits are enough for a reliability bin)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    result.update(test_predicted=logits.argmax(axis=1).astype(np.int16), test_labels=labels.astype(np.int16),
                  test_confidence=probabilities.max(axis=1).astype(np.float16))
    projection = run_projection(entry, class_ids, variant, per_class)
    result.update(projection_classes=np.asarray(class_ids), projection_variant=np.asarray(variant),
                  projection_per_class=np.asarray(per_class))
    for split, values in projection.items():  # points to float32 and labels to int16: plots need no more
        for key, value in values.items():
            value = np.asarray(value)
            if value.ndim and value.dtype.kind == "f":
                value = value.astype(np.float32)
            elif value.ndim and value.dtype.kind in "iu":
                value = value.astype(np.int16)
            result[f"projection_{split}_{key}"] = value
    return result
