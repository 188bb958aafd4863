"""``kdlab bench`` from the command line: its options turned into settings, and the result as a table."""

from __future__ import annotations

import os
from pathlib import Path


from kdlab.errors import KdlabError
from kdlab.bench.configurations import CONFIGURATIONS, DEFAULT_DATA, FULL, QUICK, Settings
from kdlab.bench.harness import run_bench
from kdlab.bench.machine_state import machine_kind


def format_table(record: dict) -> str:
    """configuration | reference img/s | kdlab img/s | kdlab / reference (median of the rounds' ratios) | their
    range, one line per kdlab mode; then the machine's kind and state."""
    rows = [("configuration", "reference img/s", "kdlab img/s", "kdlab/reference", "round range")]
    for result in record["configurations"]:
        ref = result["runs"]["reference"]["median_images_per_second"]
        for key, run in result["runs"].items():
            if key == "reference":
                continue
            mode = {"kdlab": "", "kdlab_cached": ", warm teacher cache"}[key]
            if key == "kdlab" and result["teacher"]:
                mode = ", teacher on the fly"
            low, high = run["ratio_range"]
            rows.append((result["label"] + mode, f"{ref:.1f}", f"{run['median_images_per_second']:.1f}",
                         f"{run['ratio_to_reference']:.2f}x", f"{low:.2f}-{high:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{row[0]:<{widths[0]}}  " + "  ".join(f"{cell:>{w}}" for cell, w in zip(row[1:], widths[1:]))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    check = record.get("epoch_check")
    if check:
        median = check["median_seconds"]
        lines.append(f"one epoch, KD {check['configuration']} with a warm teacher cache vs student only: "
                     f"{median['kd_warm_cache']:.1f} s vs {median['student']:.1f} s = {check['kd_over_student']:.3f}x")
    state = record.get("machine_state")
    if state is not None:
        kind = f"{record.get('machine_kind')} ({', '.join(record.get('cpu_features') or []) or 'no listed features'})"
        lines.append(f"machine: {kind}; " + ("BUSY: " + "; ".join(state["reasons"]) if state["busy"] else "quiet"))
    return "\n".join(lines)


def bench_from_options(*, quick: bool, steps: int | None, rounds: int | None, warmup: int | None,
                       workers: int | None, threads: int | None, pairs: str | None, data: str | None,
                       out: str | None, epoch_rounds: int | None = None) -> tuple[dict, Path]:
    """What ``kdlab bench`` does with its options; returns (record, the JSON file written)."""
    preset = QUICK if quick else FULL
    cores = os.cpu_count() or 1
    names = [p.strip() for p in pairs.split(",") if p.strip()] if pairs else list(preset["pairs"])
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown or not names:
        raise KdlabError(f"--pairs: unknown configuration {', '.join(unknown) or '(none given)'}; "
                         f"choose among {', '.join(CONFIGURATIONS)}")
    settings = Settings(steps=steps or preset["steps"], rounds=rounds or preset["rounds"],
                        warmup=preset["warmup"] if warmup is None else warmup,
                        workers=cores if workers is None else workers, threads=threads or cores,
                        epoch_rounds=preset["epoch_rounds"] if epoch_rounds is None else epoch_rounds)
    if settings.steps < 1 or settings.rounds < 1 or settings.warmup < 0 or settings.workers < 0 or \
            settings.threads < 1 or settings.epoch_rounds < 0:
        raise KdlabError("--steps, --rounds and --threads must be >= 1, --warmup, --workers and --epoch-rounds >= 0")
    path = Path(data) if data is not None else DEFAULT_DATA
    if not path.is_dir():
        raise KdlabError(f"kdlab bench: no CIFAR-10 JPEG image folder at {path} (expected {path}/train/<class>/*.jpg "
                         f"and {path}/test/<class>/*.jpg); give it with --data PATH")
    mode = "quick" if quick else "full"
    out_path = Path(out) if out is not None else \
        Path("benchmarks") / "results" / f"bench_{mode}_{machine_kind()}.json"
    command = ["kdlab", "bench"] + (["--quick"] if quick else []) + [
        "--steps", str(settings.steps), "--rounds", str(settings.rounds), "--warmup", str(settings.warmup),
        "--workers", str(settings.workers), "--threads", str(settings.threads), "--pairs", ",".join(names),
        "--epoch-rounds", str(settings.epoch_rounds),
        "--data", str(path), "--out", str(out_path)]
    record = run_bench([CONFIGURATIONS[n] for n in names], settings,
                       data={"source": "folder", "path": os.path.normpath(path.absolute()), "val_size": 5000},
                       name=out_path.stem, command=command, out=out_path)
    return record, out_path
