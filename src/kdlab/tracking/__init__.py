"""Experiment tracking: what the engine tells TensorBoard, MLflow or W&B about a run, through one small interface.

The engine knows only :class:`Tracker` (every method a no-op here) and :func:`open_tracker`, which returns the
trackers the recipe's ``logging`` section asks for (:mod:`kdlab.tracking.settings`) behind that interface. Each
backend lives in a module of its own and imports its library only when a run asks for it, so a run that does not
ask never pays for it. Trackers observe: they never change what a run computes, and a tracker that fails to write
warns once and lets the run finish.
"""

from __future__ import annotations

from pathlib import Path


class Tracker:
    """The engine's calls, in order: :meth:`start` once, :meth:`log_step` every ``every_steps`` optimizer steps
    (``every_steps`` None: never), :meth:`log_epoch` after each epoch's record is saved, :meth:`finish` once however
    the run ends (status completed, failed, interrupted, pruned). Steps count optimizer steps from the run's start,
    over every session of a resumed run."""

    every_steps: int | None = None

    def start(self, *, config: dict, run_dir: Path, resumed: bool, step: int) -> None:
        """The run starts (or resumes at optimizer step ``step``); ``config`` is the resolved recipe as plain data."""

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        """Per-step scalars: ``loss/<term>`` for every loss term and ``loss/total``, ``lr``, ``grad_norm``,
        ``images_per_second`` (since the previous call)."""

    def log_epoch(self, epoch: int, step: int, record: dict) -> None:
        """The epoch's ``metrics.jsonl`` record (1-based ``epoch``), after ``step`` optimizer steps in all."""

    def finish(self, *, status: str, summary: dict, run_dir: Path) -> None:
        """The run ended with ``status``; ``summary`` is what ``summary.json`` holds, ``run_dir`` has the
        predictions of a completed run (``predictions/test.npz``) for end-of-run figures."""


def open_tracker(recipe, run_dir: Path) -> Tracker:
    """The trackers ``recipe.logging`` asks for, as one :class:`Tracker` (a no-op one when it asks for none).
    No backend is built yet (issue 26): the recipe refuses an explicit request (:mod:`kdlab.tracking.settings`)."""
    return Tracker()
