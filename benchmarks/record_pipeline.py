"""Turn a finished pipeline folder into a benchmark record and a Markdown table.

    python benchmarks/record_pipeline.py OUT NAME "COMMAND THAT PRODUCED IT"

Writes benchmarks/results/<NAME>.json (machine, torch, git sha, command, and per stage: model, method and its
parameters, final and best metrics, seconds per epoch, images/s) and prints the table for benchmarks/README.md.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def completed_stages(out: Path) -> list[dict]:
    """The stages of ``out/pipeline.json``; for a pipeline stopped before its end (no pipeline.json yet), its
    completed run folders in the order they were started."""
    if (out / "pipeline.json").is_file():
        return json.loads((out / "pipeline.json").read_text())["stages"]
    runs = [d for d in out.iterdir() if (d / "summary.json").is_file()
            and json.loads((d / "summary.json").read_text()).get("status") == "completed"]
    runs.sort(key=lambda d: (d / "config.yaml").stat().st_mtime)
    stages = []
    for run in runs:
        teacher = json.loads((run / "summary.json").read_text())["method_params"].get("teacher")
        stages.append({"run": run.name, "dir": str(run), "teacher": Path(teacher).name if teacher else None})
    return stages


def main(out: str, name: str, command: str) -> None:
    stages = []
    pipeline = {"stages": completed_stages(Path(out))}
    for stage in pipeline["stages"]:
        run = Path(stage["dir"])
        summary = json.loads((run / "summary.json").read_text())
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        params = {k: v for k, v in summary["method_params"].items() if k not in ("teacher", "teacher_checkpoint")}
        stages.append({
            "run": stage["run"], "teacher": stage["teacher"], "model": summary["model"], "method": summary["method"],
            "method_params": params, "epochs": summary["epochs"], "final": summary["final"], "best": summary["best"],
            "best_by": summary["best_by"], "seconds_per_epoch_median": statistics.median(e["epoch_seconds"] for e in epochs),
            "train_images_per_second": summary["train_images_per_second"],
            "calibration": _calibration(run, summary),
        })
    first = json.loads((Path(pipeline["stages"][0]["dir"]) / "summary.json").read_text())
    record = {"name": name, "command": command, "machine": first["machine"], "device": first["device"],
              "precision": first["precision"], "torch_version": first["torch_version"], "git_sha": first["git_sha"],
              "dataset": first["dataset"], "data": first["data"], "stages": stages}
    path = Path(__file__).parent / "results" / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}\n")
    print("| stage | model | method | test acc (final) | test NLL | test ECE | test ECE after TS (T) | val acc (final) | s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in stages:
        params = ", ".join(f"{k}={v}" for k, v in s["method_params"].items())
        method = f"{s['method']} ({params})" if params else s["method"]
        if s["teacher"]:
            method += f" from {s['teacher']}"
        f = s["final"]
        c = s["calibration"]
        ts = f"{c['after']['ece']:.3f} ({c['temperature']:.2f})" if c else "–"
        print(f"| {s['run']} | {s['model']} | {method} | {f['test_acc']:.4f} | {f['test_nll']:.3f} | {f['test_ece']:.3f} | "
              f"{ts} | {f.get('val_acc', float('nan')):.4f} | {s['seconds_per_epoch_median']:.1f} |")


def _calibration(run: Path, summary: dict) -> dict | None:
    """Temperature scaling of the final weights: from the summary, or from ``kdlab eval`` output if present."""
    if "evaluation" in summary:
        return summary["evaluation"].get("calibration")
    evaluated = run / "eval-final" / "metrics.json"
    return json.loads(evaluated.read_text()).get("calibration") if evaluated.is_file() else None


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
