"""``kdlab quickstart``: every teacher-free method on scikit-learn's digits, a few seeds each, one table.

The embedded default needs no files and no download: digits ship inside scikit-learn.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from kdlab.config import load_recipe
from kdlab.train.engine import train

BASE_RECIPE = {
    "data": {"source": "digits", "val_size": 0.1},
    "model": {"name": "cnn_small8"},
    "train": {"epochs": 15, "batch_size": 64, "eval_batch_size": 1000},
    "optim": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False},
}

# One entry per method the quickstart compares: the method section of its recipe.
METHODS = [
    {"name": "ce"},
    {"name": "ls", "eps": 0.1},
]


def run_quickstart(out: str | None = None, seeds: int = 3, epochs: int = 15) -> list[dict]:
    """Train each method of ``METHODS`` with ``seeds`` seeds; print and return the per-method table rows."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdlab-quickstart-") as scratch:
        root = Path(out) if out is not None else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        rows = []
        for method in METHODS:
            summaries = []
            for seed in range(seeds):
                raw = {**BASE_RECIPE, "method": method, "seed": seed,
                       "train": {**BASE_RECIPE["train"], "epochs": epochs}}
                run_dir = root / f"{method['name']}-s{seed}"
                summaries.append(train(load_recipe(raw=raw), run_dir, force=True, quiet=True))
            rows.append(_row(method, summaries))
            print(f"  {rows[-1]['method']}: done", flush=True)
    _print_table(rows, seeds, time.perf_counter() - start, out)
    return rows


def _row(method: dict, summaries: list[dict]) -> dict:
    label = ", ".join([method["name"]] + [f"{k}={v}" for k, v in method.items() if k != "name"])
    row = {"method": label}
    for key in ("test_acc", "test_nll", "test_ece"):
        values = [s["final"][key] for s in summaries]
        row[key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return row


def _print_table(rows: list[dict], seeds: int, seconds: float, out: str | None) -> None:
    print(f"\nscikit-learn digits, cnn_small8, final epoch, mean +- std over {seeds} seed(s):")
    header = f"{'method':<20} {'test acc':>17} {'test NLL':>17} {'test ECE':>17}"
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [f"{row[k][0]:.4f} +- {row[k][1]:.4f}" for k in ("test_acc", "test_nll", "test_ece")]
        print(f"{row['method']:<20} " + " ".join(f"{c:>17}" for c in cells))
    kept = f"; runs kept in {out}" if out else ""
    print(f"({seconds:.0f} s{kept})")
