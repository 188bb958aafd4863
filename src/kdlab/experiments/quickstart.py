"""``kdlab quickstart``: the soft-target methods on scikit-learn's digits, a few seeds each, one table; with
``--audio``, CE, LS and LSR-OS-TC on the Free Spoken Digit Dataset.

A resnet8 teacher is trained first (one run); the KD rows distil from it into the same small CNN the teacher-free
rows train. The online rows (DML, OKDDip) train resnet8 peers together with no teacher: compare them with the
teacher line, which is resnet8 trained alone with CE; their runs' summaries hold every peer, the group leader and
the peer ensemble. The embedded default needs no files and no download: digits ship inside scikit-learn.

The audio quickstart reads FSDD (``recordings/{digit}_{speaker}_{index}.wav``, official split) from ``--data``
(default ``$KDLAB_FSDD``, else ``../shared/data/fsdd``), computes log-mel features on the device and trains
``audio_cnn_small`` with time-shift, gain and SpecAugment augmentation.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from kdlab.errors import KdlabError
from kdlab.io import atomic_write_text
from kdlab.experiments.study import run_study
from kdlab.store.rundir import RunDir

BASE_RECIPE = {
    "data": {"source": "digits", "val_size": 0.1},
    "model": {"name": "cnn_small8"},
    "train": {"epochs": 8, "batch_size": 64, "eval_batch_size": 1000},
    "optim": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False},
}

TEACHER = "<teacher run>"  # becomes "@teacher": the shared teacher stage of the quickstart study

# One entry per method the quickstart compares: the method section of its recipe.
METHODS = [
    {"name": "ce"},
    {"name": "ls", "eps": 0.1},
    {"name": "lsr_os_tc", "eps": 0.1, "tau": 4.0, "beta": 0.2},
    {"name": "tfkd_reg", "alpha": 0.1, "tau": 20.0, "a": 0.99},
    {"name": "kd", "divergence": "kl", "alpha": 0.9, "tau": 4.0, "teacher": TEACHER},
    {"name": "kd", "divergence": "mse", "alpha": 1.0, "teacher": TEACHER},
    {"name": "dml", "branches": 2},
    {"name": "okddip", "branches": 4},
]
TEACHER_MODEL = "resnet8"


AUDIO_RECIPE = {
    "data": {"source": "fsdd", "options": {"sample_rate": 8000, "seconds": 1.0}, "val_size": 270,
             "features": {"n_fft": 256, "hop_length": 128, "n_mels": 32},
             "audio_augment": {"time_shift": 0.1, "gain_db": 6.0, "freq_masks": 1, "freq_mask_width": 6,
                               "time_masks": 1, "time_mask_width": 10}},
    "model": {"name": "audio_cnn_small"},
    "train": {"epochs": 6, "batch_size": 64, "eval_batch_size": 1000},
    "optim": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False},
}
AUDIO_METHODS = [{"name": "ce"}, {"name": "ls", "eps": 0.1}, {"name": "lsr_os_tc", "eps": 0.1, "tau": 4.0, "beta": 0.2}]


def default_fsdd() -> Path:
    return Path(os.environ.get("KDLAB_FSDD") or Path("..") / "shared" / "data" / "fsdd")


def run_audio_quickstart(out: str | None = None, data: str | None = None, seeds: int = 2,
                         epochs: int = AUDIO_RECIPE["train"]["epochs"], jobs: int | None = None) -> list[dict]:
    """CE, LS and LSR-OS-TC on FSDD with ``seeds`` seeds each; print and return the table rows."""
    path = Path(data) if data is not None else default_fsdd()
    if not (path / "recordings").is_dir() and not path.name == "recordings":
        raise KdlabError(f"quickstart --audio: no FSDD at {path} (expected {path}/recordings/*.wav); pass --data "
                         f"or set KDLAB_FSDD")
    base = {**AUDIO_RECIPE, "data": {**AUDIO_RECIPE["data"], "path": str(path)},
            "train": {**AUDIO_RECIPE["train"], "epochs": epochs}}
    stages = {_stage_name(method): {"method": method} for method in AUDIO_METHODS}
    title = (f"Free Spoken Digit Dataset (official split, 300 test recordings), audio_cnn_small on log-mel, "
             f"{epochs} epochs, final epoch, mean +- std over {seeds} seed(s):")
    return _compare({"base": base, "stages": stages}, AUDIO_METHODS, seeds, out, jobs, title)


def run_quickstart(out: str | None = None, seeds: int = 3, epochs: int = BASE_RECIPE["train"]["epochs"],
                   jobs: int | None = None) -> list[dict]:
    """Train each method of ``METHODS`` with ``seeds`` seeds (the teacher once); print and return the table rows."""
    base = {**BASE_RECIPE, "train": {**BASE_RECIPE["train"], "epochs": epochs}}
    stages = {"teacher": {"model": {"name": TEACHER_MODEL}, "shared": True}}
    for method in METHODS:
        stage = {"method": {k: "@teacher" if v == TEACHER else v for k, v in method.items()}}
        if _online(method):  # several networks per run: half the epochs keeps the quickstart short
            stage.update(model={"name": TEACHER_MODEL}, train={"epochs": max(1, epochs // 2)})
        stages[_stage_name(method)] = stage
    title = (f"scikit-learn digits, cnn_small8 students ({TEACHER_MODEL} teacher for kd; online rows train "
             f"{TEACHER_MODEL} peers, their inference head shown), final epoch, mean +- std over {seeds} seed(s):")
    return _compare({"base": base, "stages": stages}, METHODS, seeds, out, jobs, title)


def _compare(spec: dict, methods: list[dict], seeds: int, out: str | None, jobs: int | None, title: str) -> list[dict]:
    """Run ``spec`` (a shared ``teacher`` stage, if any, and one stage per method) as a study over ``seeds`` seeds
    with CE as the baseline, ``jobs`` runs side by side (default: one per core, at most two), in ``out`` (which
    ``kdlab report`` then reads) or a scratch folder; print the table."""
    start = time.perf_counter()
    jobs = jobs or max(1, min(2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="kdlab-quickstart-") as scratch:
        root = Path(out) if out is not None else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        recipe = root / "study.yaml"
        atomic_write_text(recipe, yaml.safe_dump({**spec, "seeds": seeds, "baseline": "ce"}, sort_keys=False))
        run_study(recipe, root, jobs=jobs, quiet=True)
        if "teacher" in spec["stages"]:
            teacher = RunDir(root / "teacher").read_summary()
            print(f"  teacher {TEACHER_MODEL}: test acc {teacher['final']['test_acc']:.4f}", flush=True)
        rows = [_row(method, [RunDir(root / f"{_stage_name(method)}-s{seed}").read_summary() for seed in range(seeds)])
                for method in methods]
    _print_table(title, rows, time.perf_counter() - start, out)
    return rows


def _online(method: dict) -> bool:
    """Whether ``method`` trains several heads (online distillation): such rows train TEACHER_MODEL peers, since
    cnn_small8 has no stages to share."""
    from kdlab import methods

    return method["name"] in methods.names(heads=True)


def _stage_name(method: dict) -> str:
    return f"{method['name']}-{method['divergence']}" if "divergence" in method else method["name"]


def _row(method: dict, summaries: list[dict]) -> dict:
    label = ", ".join([method["name"]] + [f"{k}={v}" for k, v in method.items() if k not in ("name", "teacher")])
    if _online(method):
        heads = {s["inference_head"] for s in summaries}
        label += f" ({TEACHER_MODEL}, {heads.pop() if len(heads) == 1 else 'best peer'}, {summaries[0]['epochs']} ep)"
    row = {"method": label}
    for key in ("test_acc", "test_nll", "test_ece"):
        values = [s["final"][key] for s in summaries]
        row[key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return row


def _print_table(title: str, rows: list[dict], seconds: float, out: str | None) -> None:
    print(f"\n{title}")
    header = f"{'method':<44} {'test acc':>17} {'test NLL':>17} {'test ECE':>17}"
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [f"{row[k][0]:.4f} +- {row[k][1]:.4f}" for k in ("test_acc", "test_nll", "test_ece")]
        print(f"{row['method']:<44} " + " ".join(f"{c:>17}" for c in cells))
    kept = f"; runs kept in {out}" if out else ""
    print(f"({seconds:.0f} s{kept})")
