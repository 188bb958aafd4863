"""An MLflow run per kdlab run, through ``mlflow.tracking.MlflowClient`` (no fluent API: nothing global is set).

* Where: ``logging.mlflow_uri`` (any MLflow tracking URI: ``sqlite:///…``, ``http://host:port``, ``file:/…``),
  default the file store ``./mlruns`` of the working directory as a ``file:`` URI of its absolute path. MLflow 3
  refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set; a run that asks for one sets it for its process
  (unless the user set it), and MLflow's store-creation chatter (database migrations, deprecation warnings) is kept
  off the console.
* What: params = the flattened resolved config (``section.key``, values as text, cut to MLflow's length limit);
  metrics = the same scalars TensorBoard gets, at their global step (``loss/<term>``, ``lr``, …, ``epoch/<key>``;
  characters MLflow refuses in a name, such as the ``@`` of a head's metric, become ``_``); tags ``kdlab.version``,
  ``kdlab.method``, ``kdlab.model``, ``kdlab.run_dir`` and ``kdlab.status``; at the end the run's summary.json and
  config.yaml as artifacts and the run status FINISHED (completed), FAILED (failed) or KILLED (interrupted, pruned).
* Resume: the run id goes to ``RUN_DIR/tracking.json``; a resumed run reopens that MLflow run. MLflow cannot delete
  metric points, so a step the interrupted session already logged (it got past its last checkpoint) is not logged
  again: the resumed session skips every point at or below the last step each metric holds.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
import warnings
from pathlib import Path
from urllib.parse import urlparse

from kdlab.tracking import Backend, as_text, epoch_scalars, flatten, read_tracking, record_tracking

#: kdlab status -> MLflow run status.
STATUS = {"completed": "FINISHED", "failed": "FAILED"}
_NOT_IN_A_NAME = re.compile(r"[^/\w.\- ]")


class MlflowTracker(Backend):
    name = "mlflow"
    package = "mlflow"
    setting = "logging.mlflow"
    _client = None
    _run_id = None

    def load(self) -> None:
        from mlflow.tracking import MlflowClient  # needs the mlflow package

        self._client_class = MlflowClient

    def start(self, *, config: dict, run_dir: Path, resumed: bool, step: int) -> None:
        from mlflow.utils import validation

        self._limits = (validation.MAX_PARAM_VAL_LENGTH, validation.MAX_ENTITY_KEY_LENGTH,
                        validation.MAX_PARAMS_TAGS_PER_BATCH, validation.MAX_METRICS_PER_BATCH)
        self._uri = uri = tracking_uri(self.settings.mlflow_uri)
        self._logged: dict[str, int] = {}
        with _quiet():
            if urlparse(uri).scheme in ("", "file"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self._client = self._client_class(tracking_uri=uri)
            stored = read_tracking(run_dir).get("mlflow") or {}
            run = self._existing_run(stored) if stored.get("tracking_uri") == uri else None
            if run is not None:
                self._run_id = run.info.run_id
                self._client.update_run(self._run_id, status="RUNNING")
                self._client.set_tag(self._run_id, "kdlab.status", "running")
                self._logged = {key: max(m.step for m in self._client.get_metric_history(self._run_id, key))
                                for key in run.data.metrics}
            else:
                self._run_id = self._new_run(config, Path(run_dir))
                record_tracking(run_dir, "mlflow", {"run_id": self._run_id, "tracking_uri": uri,
                                                    "experiment": self.settings.mlflow_experiment})

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self._log(step, scalars)

    def log_epoch(self, epoch: int, step: int, record: dict) -> None:
        self._log(step, epoch_scalars(record))

    def finish(self, *, status: str, summary: dict, run_dir: Path) -> None:
        run_id, self._run_id = self._run_id, None
        with _quiet():
            self._client.set_tag(run_id, "kdlab.status", status)
            for name in ("summary.json", "config.yaml"):
                if (Path(run_dir) / name).is_file():
                    self._client.log_artifact(run_id, str(Path(run_dir) / name))
            self._client.set_terminated(run_id, STATUS.get(status, "KILLED"))

    def close(self) -> None:
        """After a failure the MLflow run is left as it is: the store may be what failed (a server gone would
        cost another round of MLflow's retries), and its status RUNNING then says the truth, that it was not
        finished."""
        self._run_id = None

    # ------------------------------------------------------------------------------------------------------------

    def _existing_run(self, stored: dict):
        """The stored run, when this store still has it (a deleted run, or another store: None)."""
        run_id = stored.get("run_id")
        if not isinstance(run_id, str):
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException:
            return None
        return run if run.info.lifecycle_stage == "active" else None

    def _new_run(self, config: dict, run_dir: Path) -> str:
        from mlflow.entities import Param, RunTag

        from kdlab.version import __version__

        experiment_id = self._experiment_id()
        method = (config.get("method") or {}).get("name")
        tags = {"kdlab.version": __version__, "kdlab.method": str(method), "kdlab.run_dir": str(run_dir.resolve()),
                "kdlab.model": str((config.get("model") or {}).get("name")), "kdlab.status": "running"}
        run = self._client.create_run(experiment_id, run_name=f"{run_dir.parent.name}/{run_dir.name}", tags=tags)
        max_value, max_key, per_batch, _ = self._limits
        params = [Param(key[:max_key], as_text(value)[:max_value]) for key, value in flatten(config).items()]
        for first in range(0, len(params), per_batch):
            self._client.log_batch(run.info.run_id, params=params[first:first + per_batch], synchronous=True)
        self._client.log_batch(run.info.run_id, tags=[RunTag("mlflow.source.name", "kdlab train")])
        return run.info.run_id

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.settings.mlflow_experiment
        experiment = self._client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage != "active":
                self._client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return self._client.create_experiment(name, artifact_location=artifact_location(self._uri))
        except MlflowException:  # another run created it meanwhile
            experiment = self._client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(key, float(value), now, step) for key, value in
                  ((metric_name(tag), value) for tag, value in scalars.items())
                  if step > self._logged.get(key, -1)]
        per_batch = self._limits[3]
        for first in range(0, len(points), per_batch):
            self._client.log_batch(self._run_id, metrics=points[first:first + per_batch], synchronous=True)


def tracking_uri(setting: str | None) -> str:
    """The tracking URI a run logs to: the setting, or the file store ``./mlruns`` as a ``file:`` URI."""
    return setting if setting else (Path.cwd() / "mlruns").resolve().as_uri()


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of a local SQLite store keeps its artifacts: ``mlartifacts/`` beside the database
    file (MLflow's own default, ``./mlruns`` of the working directory at the time, scatters them over whatever
    folders runs start in, and collides with a file store there). Other stores: their default (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri[len("sqlite:///"):])
    return (database.parent / "mlartifacts").resolve().as_uri() if database.name else None


def metric_name(tag: str) -> str:
    """``tag`` as an MLflow metric name (letters, digits, ``_ - . / `` and spaces; anything else becomes ``_``)."""
    return _NOT_IN_A_NAME.sub("_", tag)


@contextlib.contextmanager
def _quiet():
    """MLflow's chatter kept off the run's console: SQL migrations at INFO and SQLAlchemy deprecation warnings when
    a store opens, the "View run at" links it prints on stdout (kdlab's stdout is for kdlab's own output) when a
    run ends. The loggers' levels are restored after."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
