"""A study's runs as a queue in an Optuna storage, drained by any number of workers on any number of machines
(``kdlab study STUDY.yaml --out OUT --storage URL``).

The first worker enqueues one Optuna trial per planned run (fixed parameter ``run`` = its index in the plan, in
training order; a second worker racing it adds nothing, ``skip_if_exists``). Every worker then asks Optuna for the
next waiting trial, which the storage hands out once (a row-locked transaction in PostgreSQL, a serialised one in
SQLite), trains it with :func:`kdlab.experiments.pipeline.run_stage` (which reuses a completed run and resumes an interrupted
one) and reports it complete. While it trains, the worker records the trial's heartbeat; a worker that crashes stops
beating, and after the grace period the next worker to ask fails that trial and re-queues it (Optuna's retry), so
the run is resumed from its last checkpoint by someone else. A run whose teacher has not finished yet goes back to
the end of the queue. Finished runs are never trained again: their run directory says completed.

``OUT`` must be one folder all workers see (a shared file system); the storage decides who trains what, and each
run directory's lock (:class:`kdlab.store.rundir.RunLock`) guarantees that no two processes ever train it at once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kdlab.errors import KdlabError
from kdlab.experiments.optuna_storage import GRACE_SECONDS, HEARTBEAT_SECONDS, Heartbeat, import_optuna, open_storage
from kdlab.experiments.pipeline import PlannedRun, run_stage
from kdlab.train.engine import TrainingDiverged
from kdlab.store.rundir import RunDir

POLL_SECONDS = 1.0


def queue_name(path: str | Path) -> str:
    return f"kdlab-study-{Path(path).stem}"


def drain(runs: list[PlannedRun], out: Path, url: str, name: str, quiet: bool = False,
          heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS) -> dict[str, str]:
    """Work on the queue ``name`` of ``runs`` until every run is complete (or failed for good); returns
    {run name: error} of the runs that failed here."""
    optuna = import_optuna()
    storage = open_storage(url, heartbeat, grace)
    names = [run.name for run in runs]
    try:  # the one worker that creates the queue fills it; the others find it filled
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        creator = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        creator = False
    planned = study.user_attrs.get("runs")
    deadline = time.time() + grace
    while not creator and planned is None and time.time() < deadline:  # the creator is still filling it
        time.sleep(POLL_SECONDS / 2)
        planned = study.user_attrs.get("runs")
    if planned is not None and planned != names:
        raise KdlabError(f"--storage: the queue {name} holds another plan ({len(planned)} runs, first "
                         f"{planned[:2]}); use another --storage or study name")
    if planned is None:  # a new queue, or one whose creator died while filling it: (complete and) mark it
        for index in range(len(runs)):
            study.enqueue_trial({"run": index}, skip_if_exists=not creator)
        study.set_user_attr("runs", names)
    by_name = {run.name: run for run in runs}
    failures: dict[str, str] = {}
    states = optuna.trial.TrialState
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if not any(t.state in (states.WAITING, states.RUNNING) for t in trials):
            return failures  # every trial handed out and finished: the queue is drained
        if not any(t.state == states.WAITING for t in trials):
            time.sleep(POLL_SECONDS)  # others are training; a crashed one's run comes back after the grace period
            continue
        trial = study.ask()
        # beat at once: a worker killed between asking and its first heartbeat would leave a trial RUNNING that no
        # one ever takes for stale (Optuna only fails trials that have a heartbeat), and the queue would never drain
        with Heartbeat(storage, trial._trial_id, heartbeat):  # noqa: SLF001
            outcome = _work_on(study, trial, runs, by_name, out, failures, quiet)
        if outcome is not None:
            _tell(study, trial, *outcome)


def _work_on(study, trial, runs, by_name, out, failures, quiet):
    """Train the run a queued trial names (or put it back): the (value, state) to tell, None if told already."""
    states = import_optuna().trial.TrialState
    fixed = study._storage.get_trial(trial._trial_id).system_attrs.get("fixed_params")  # noqa: SLF001
    if not fixed or "run" not in fixed:  # the queue emptied between looking and asking
        return None, states.FAIL
    run = runs[int(trial.suggest_int("run", 0, len(runs) - 1))]
    trial.set_user_attr("name", run.name)
    waiting = [name for name in run.teachers if not _completed(out / name)]
    if waiting:
        failed = next((name for name in waiting if name in failures or _failed_for_good(out / name)), None)
        if failed:
            failures[run.name] = f"teacher {failed} failed"
            return None, states.FAIL
        study.enqueue_trial({"run": runs.index(by_name[run.name])})  # not ready: back to the end of the queue
        _tell(study, trial, state=states.FAIL)  # (queued again first, so the queue never looks empty)
        time.sleep(POLL_SECONDS)
        return None
    try:
        record = run_stage(out, run, quiet)
    except (KdlabError, TrainingDiverged) as error:
        if "in use by another kdlab process" in str(error) or "already exists" in str(error):
            # another worker is training this run (a duplicate claim, or one taken for dead while alive): look
            # again later, so the queue is not taken for drained while that run is unfinished
            study.enqueue_trial({"run": runs.index(run)})
            _tell(study, trial, state=states.FAIL)
            time.sleep(POLL_SECONDS)
            return None
        failures[run.name] = str(error)
        print(f"{run.name}: failed: {error}", file=sys.stderr, flush=True)
        return None, states.FAIL
    print(f"{run.name}: {record['status']}, test_acc {record['final']['test_acc']:.4f}", flush=True)
    return record["final"]["test_acc"], None


def _tell(study, trial, value=None, state=None) -> None:
    """Report a trial; one that another worker already failed as stale (its heartbeat came late, e.g. on a loaded
    machine) stays failed: its retry finds the run complete and reuses it, so nothing is trained twice."""
    try:
        study.tell(trial, value, state=state)
    except ValueError as error:
        if "Cannot tell" not in str(error):
            raise


def _completed(folder: Path) -> bool:
    summary = RunDir(folder).read_summary() if folder.is_dir() else None
    return summary is not None and summary.get("status") == "completed"


def _failed_for_good(folder: Path) -> bool:
    summary = RunDir(folder).read_summary() if folder.is_dir() else None
    return summary is not None and summary.get("status") == "failed"
