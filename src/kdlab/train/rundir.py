"""The run directory: the contract between a run and everything downstream (reports, studies, users' scripts).

``RUN_DIR/config.yaml``      the fully resolved recipe; ``kdlab train RUN_DIR/config.yaml --out OTHER`` repeats it
``RUN_DIR/metrics.jsonl``    one JSON object per completed epoch: every loss term, lr, val/test metrics, timing
``RUN_DIR/summary.json``     the run's record (see ``kdlab.train.engine``); ``status`` is running/completed/failed
``RUN_DIR/checkpoint/``      safetensors weights + JSON state (``kdlab.train.checkpoint``)
``RUN_DIR/predictions/``     ``test.npz`` and, with a val split, ``val.npz``: arrays ``logits`` and ``labels``
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    def prepare_new(self, force: bool) -> None:
        """Create the directory; an existing one is refused unless ``force`` (which deletes it first)."""
        if self.path.exists():
            if not force:
                raise KdlabError(
                    f"output folder {self.path} already exists; use --resume to continue it or --force to replace it"
                )
            if not (self.path.is_dir() and (self.config.exists() or not any(self.path.iterdir()))):
                raise KdlabError(f"--force refuses to delete {self.path}: it is not a kdlab run directory")
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self.checkpoint.mkdir()

    def write_metrics(self, history: list[dict]) -> None:
        atomic_write_text(self.metrics, "".join(json.dumps(record) + "\n" for record in history))

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary, summary)

    def completed_summary(self, role: str = "") -> dict:
        """The summary of this completed run; a one-line error naming ``role`` (e.g. "teacher ") otherwise."""
        if not self.config.is_file():
            raise KdlabError(f"{role}{self.path} is not a kdlab run directory (no config.yaml)")
        summary = self.read_summary()
        if summary is None:
            raise KdlabError(f"{role}{self.path} has no readable summary.json")
        if summary.get("status") != "completed":
            raise KdlabError(f"{role}{self.path} has not completed (status {summary.get('status')!r}); finish or resume it first")
        return summary

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None
