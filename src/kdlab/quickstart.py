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

from kdlab.config import load_recipe
from kdlab.errors import KdlabError
from kdlab.train.engine import train

BASE_RECIPE = {
    "data": {"source": "digits", "val_size": 0.1},
    "model": {"name": "cnn_small8"},
    "train": {"epochs": 12, "batch_size": 64, "eval_batch_size": 1000},
    "optim": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False},
}

TEACHER = "<teacher run>"  # replaced by the teacher's run directory

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
ONLINE = {"dml", "one", "cl_ilr", "okddip"}  # these train TEACHER_MODEL peers (cnn_small8 has no stages to share)


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
                         epochs: int = AUDIO_RECIPE["train"]["epochs"]) -> list[dict]:
    """CE, LS and LSR-OS-TC on FSDD with ``seeds`` seeds each; print and return the table rows."""
    path = Path(data) if data is not None else default_fsdd()
    if not (path / "recordings").is_dir() and not path.name == "recordings":
        raise KdlabError(f"quickstart --audio: no FSDD at {path} (expected {path}/recordings/*.wav); pass --data "
                         f"or set KDLAB_FSDD")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdlab-quickstart-audio-") as scratch:
        root = Path(out) if out is not None else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        base = {**AUDIO_RECIPE, "data": {**AUDIO_RECIPE["data"], "path": str(path)},
                "train": {**AUDIO_RECIPE["train"], "epochs": epochs}}
        rows = []
        for method in AUDIO_METHODS:
            summaries = [train(load_recipe(raw={**base, "method": method, "seed": seed}), root / _run_name(method, seed),
                               force=True, quiet=True) for seed in range(seeds)]
            rows.append(_row(method, summaries))
            print(f"  {rows[-1]['method']}: done", flush=True)
    title = (f"Free Spoken Digit Dataset (official split, 300 test recordings), audio_cnn_small on log-mel, "
             f"{epochs} epochs, final epoch, mean +- std over {seeds} seed(s):")
    _print_table(title, rows, time.perf_counter() - start, out)
    return rows


def run_quickstart(out: str | None = None, seeds: int = 3, epochs: int = 12) -> list[dict]:
    """Train each method of ``METHODS`` with ``seeds`` seeds; print and return the per-method table rows."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdlab-quickstart-") as scratch:
        root = Path(out) if out is not None else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        train_section = {**BASE_RECIPE["train"], "epochs": epochs}
        teacher_run = root / "teacher"
        teacher = train(load_recipe(raw={**BASE_RECIPE, "train": train_section, "model": {"name": TEACHER_MODEL}}),
                        teacher_run, force=True, quiet=True)
        print(f"  teacher {TEACHER_MODEL}: test acc {teacher['final']['test_acc']:.4f}", flush=True)
        rows = []
        for method in METHODS:
            method = {k: str(teacher_run) if v == TEACHER else v for k, v in method.items()}
            summaries = []
            for seed in range(seeds):
                raw = {**BASE_RECIPE, "method": method, "seed": seed, "train": train_section}
                if method["name"] in ONLINE:  # several networks per run: half the epochs keeps the quickstart short
                    raw["model"] = {"name": TEACHER_MODEL}
                    raw["train"] = {**train_section, "epochs": max(1, epochs // 2)}
                summaries.append(train(load_recipe(raw=raw), root / _run_name(method, seed), force=True, quiet=True))
            rows.append(_row(method, summaries))
            print(f"  {rows[-1]['method']}: done", flush=True)
    title = (f"scikit-learn digits, cnn_small8 students ({TEACHER_MODEL} teacher for kd; online rows train "
             f"{TEACHER_MODEL} peers, their inference head shown), final epoch, mean +- std over {seeds} seed(s):")
    _print_table(title, rows, time.perf_counter() - start, out)
    return rows


def _run_name(method: dict, seed: int) -> str:
    return f"{method['name']}-{method['divergence']}-s{seed}" if "divergence" in method else f"{method['name']}-s{seed}"


def _row(method: dict, summaries: list[dict]) -> dict:
    label = ", ".join([method["name"]] + [f"{k}={v}" for k, v in method.items() if k not in ("name", "teacher")])
    if method["name"] in ONLINE:
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
