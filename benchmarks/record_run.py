"""Turn a finished run directory into a benchmark record: benchmarks/results/<name>.json.

    python benchmarks/record_run.py RUN_DIR NAME "COMMAND THAT PRODUCED THE RUN"

The record holds the machine, torch version, git sha, the command, seconds per epoch (train + evaluation, and train
alone), training images per second and the final and best test accuracy, all read from the run's own files.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(run_dir: str, name: str, command: str) -> None:
    run = Path(run_dir)
    summary = json.loads((run / "summary.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_seconds = [e["epoch_seconds"] for e in epochs]
    record = {
        "name": name,
        "command": command,
        "machine": summary["machine"],
        "device": summary["device"],
        "precision": summary["precision"],
        "channels_last": summary["channels_last"],
        "compile": summary["compile"],
        "threads": summary["threads"],
        "torch_version": summary["torch_version"],
        "kdlab_version": summary["kdlab_version"],
        "git_sha": summary["git_sha"],
        "dataset": summary["dataset"],
        "data": summary["data"],
        "model": summary["model"],
        "method": summary["method"],
        "epochs": summary["epochs"],
        "seconds_per_epoch_median": statistics.median(train_seconds),
        "train_images_per_second": summary["train_images_per_second"],
        "wall_seconds": summary["wall_seconds"],
        "final": summary["final"],
        "best": summary["best"],
        "best_by": summary["best_by"],
    }
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
