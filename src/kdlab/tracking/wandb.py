"""A Weights & Biases run per kdlab run, offline by default: ``RUN_DIR/wandb/offline-run-*/`` for a later
``wandb sync``.

* Offline (``logging.wandb_mode: offline``, the default) nothing goes to the network: the run is made with
  ``mode="offline"`` and, unless the user set them, ``WANDB_MODE=offline`` and ``WANDB_ERROR_REPORTING=false`` (the
  wandb-core service would otherwise report its own errors online). Console capture, system-metrics sampling, the
  machine and git probes and the requirements list are off: kdlab already records the machine, the git commit and
  the versions in summary.json, and they would only slow every run down.
* What: config = the resolved recipe; history = the same scalars TensorBoard gets at their global step
  (``loss/<term>``, ``lr``, …, ``epoch/<key>``); at the end, the summary holds ``status``, ``final/<metric>`` and
  ``best/<metric>`` and the run's exit code is 0 for a completed run, 1 otherwise (an interrupted run is marked
  pre-empted first, as W&B marks a run that will be resumed).
* Resume: the run id goes to ``RUN_DIR/tracking.json``; a resumed kdlab run calls ``wandb.init(id=..., resume=
  "allow")``, which offline writes a further ``offline-run-*`` folder of the same id (``wandb sync`` uploads them
  in order, as one run).
"""

from __future__ import annotations

import os
from pathlib import Path

from kdlab.tracking import Backend, epoch_scalars, read_tracking, record_tracking


class WandbTracker(Backend):
    name = "wandb"
    package = "wandb"
    setting = "logging.wandb"
    _run = None

    def load(self) -> None:
        import wandb  # needs the wandb package

        self._wandb = wandb

    def start(self, *, config: dict, run_dir: Path, resumed: bool, step: int) -> None:
        wandb, mode = self._wandb, self.settings.wandb_mode
        if mode == "offline":
            os.environ.setdefault("WANDB_MODE", "offline")
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        stored = read_tracking(run_dir).get("wandb") or {}
        run_id = stored.get("run_id") if isinstance(stored.get("run_id"), str) else None
        settings = wandb.Settings(mode=mode, console="off", x_disable_stats=True, x_disable_meta=True,
                                  x_disable_machine_info=True, x_save_requirements=False, disable_git=True,
                                  disable_code=True, save_code=False, quiet=True, silent=True)
        run_dir = Path(run_dir)
        self._run = wandb.init(project=self.settings.wandb_project, dir=str(run_dir), id=run_id, resume="allow",
                               name=f"{run_dir.parent.name}/{run_dir.name}", config=config, job_type="train",
                               reinit="create_new", settings=settings)
        if run_id is None:
            record_tracking(run_dir, "wandb", {"run_id": self._run.id, "project": self.settings.wandb_project,
                                               "mode": mode})

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(dict(scalars), step=step)

    def log_epoch(self, epoch: int, step: int, record: dict) -> None:
        self._run.log(epoch_scalars(record), step=step)

    def finish(self, *, status: str, summary: dict, run_dir: Path) -> None:
        run, self._run = self._run, None
        values = {"status": status}
        for block in ("final", "best"):
            values.update({f"{block}/{key}": value for key, value in (summary.get(block) or {}).items()
                           if isinstance(value, (int, float, str)) and not isinstance(value, bool)})
        for key in ("wall_seconds", "train_images_per_second", "params", "epochs_completed"):
            if isinstance(summary.get(key), (int, float)):
                values[key] = summary[key]
        run.summary.update(values)
        if status == "interrupted":
            run.mark_preempting()
        run.finish(exit_code=0 if status == "completed" else 1)

    def close(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.finish(exit_code=1)
