"""Experiment tracking: what the engine tells TensorBoard, MLflow or W&B about a run, through one small interface.

The engine knows only :class:`Tracker` (every method a no-op here) and :func:`open_tracker`, which returns the
trackers the recipe's ``logging`` section asks for (:mod:`kdlab.tracking.settings`) behind that interface. Each
backend lives in a module of its own and imports its library only when a run asks for it, so a run that does not
ask never pays for it. Trackers observe: they never change what a run computes, and a tracker that fails to write
warns once and lets the run finish. How to turn each on and open what it wrote: docs/tracking.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

from kdlab.errors import KdlabError

#: The file in a run directory that holds each backend's run id (MLflow, W&B), so a resumed run continues the
#: tracker's run instead of starting another.
TRACKING_FILE = "tracking.json"


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


class Backend(Tracker):
    """One tracker library behind the :class:`Tracker` interface. ``package`` is the distribution it needs and
    ``setting`` the recipe key that asked for it (for the missing-package message); :meth:`load` imports the
    library (ImportError when it is not installed), :meth:`close` releases what a backend holds after it failed."""

    name = "backend"
    package = ""
    setting = ""

    def __init__(self, settings, run_dir: Path, optional: bool = False):
        self.settings, self.run_dir, self.optional = settings, Path(run_dir), optional

    def load(self) -> None:
        importlib.import_module(self.package)

    def close(self) -> None:
        """Release files, writers or runs after a failure (the tracker is off for the rest of the run)."""


class Trackers(Tracker):
    """Several backends as one tracker. Every call goes to each backend in turn; a backend that raises is reported
    once on stderr and dropped, so a full disk or a vanished server costs the run its tracking, never its result.
    The one error that stops a run is a backend the recipe asked for whose library is not installed, raised by
    :meth:`start` before the first step."""

    def __init__(self, backends: list[Backend], every_steps: int | None):
        self.backends = list(backends)
        self._every_steps = every_steps
        self.every_steps = every_steps if self.backends else None

    def start(self, *, config: dict, run_dir: Path, resumed: bool, step: int) -> None:
        for backend in list(self.backends):
            try:
                backend.load()
            except ImportError as error:
                if not backend.optional:
                    raise KdlabError(f"{backend.setting} needs the {backend.package} package: pip install "
                                     f"'kdlab[{backend.package}]'") from None
                self._drop(backend, "start", error)
        self._each("start", config=config, run_dir=run_dir, resumed=resumed, step=step)

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self._each("log_step", step, scalars)

    def log_epoch(self, epoch: int, step: int, record: dict) -> None:
        self._each("log_epoch", epoch, step, record)

    def finish(self, *, status: str, summary: dict, run_dir: Path) -> None:
        self._each("finish", status=status, summary=summary, run_dir=run_dir)

    def _each(self, call: str, *args, **kwargs) -> None:
        for backend in list(self.backends):
            try:
                getattr(backend, call)(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 -- any failure of a tracker: it must never end the run
                self._drop(backend, call, error)

    def _drop(self, backend: Backend, call: str, error: BaseException) -> None:
        self.backends.remove(backend)
        if not self.backends:
            self.every_steps = None
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        print(f"kdlab: warning: {backend.name} tracking failed in {call} ({detail}); it is off for the rest of "
              f"this run, which goes on", file=sys.stderr)
        try:
            backend.close()
        except Exception:  # noqa: BLE001 -- already reported; closing is best effort
            pass


def installed(package: str) -> bool:
    """Whether ``package`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def open_tracker(recipe, run_dir: Path) -> Tracker:
    """The trackers ``recipe.logging`` asks for, as one :class:`Tracker` (a no-op one when it asks for none).

    ``tensorboard: auto`` is on when the tensorboard package is importable (and silently off when not); ``true``
    and ``mlflow`` / ``wandb`` make a missing package a one-line error at :meth:`Tracker.start`. Only the modules
    of the backends asked for are imported, and each imports its library only at start."""
    settings, run_dir = recipe.logging, Path(run_dir)
    backends: list[Backend] = []
    if settings.tensorboard is True or (settings.tensorboard == "auto" and installed("tensorboard")):
        from kdlab.tracking.tensorboard import TensorBoardTracker

        backends.append(TensorBoardTracker(settings, run_dir, optional=settings.tensorboard == "auto"))
    if settings.mlflow:
        from kdlab.tracking.mlflow import MlflowTracker

        backends.append(MlflowTracker(settings, run_dir))
    if settings.wandb:
        from kdlab.tracking.wandb import WandbTracker

        backends.append(WandbTracker(settings, run_dir))
    if not backends:
        return Tracker()
    return Trackers(backends, settings.every_steps)


# ------------------------------------------------------------------------------------------ shared by the backends


def epoch_scalars(record: dict) -> dict[str, float]:
    """``epoch/<key>`` for every numeric value of an epoch record (strings such as ``inference_head`` and booleans
    left out): the names every backend logs an epoch under."""
    return {f"epoch/{key}": float(value) for key, value in record.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """A nested config as ``{"section.key": value}`` (lists and empty sections kept as values): the parameters
    MLflow stores and TensorBoard's hparams compare."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def as_text(value) -> str:
    """A config value as a tracker stores a parameter: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.dumps(value)


def read_tracking(run_dir: Path) -> dict:
    """The run directory's ``tracking.json`` ({backend: {run_id, ...}}), empty when absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_tracking(run_dir: Path, backend: str, entry: dict) -> None:
    """Store ``entry`` (a backend's run id and where it lives) under ``backend`` in ``tracking.json``, atomically."""
    from kdlab.io import atomic_write_json

    data = read_tracking(run_dir)
    data[backend] = entry
    atomic_write_json(Path(run_dir) / TRACKING_FILE, data)
