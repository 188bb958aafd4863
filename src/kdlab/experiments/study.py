"""Studies: a grid of methods and hyper-parameters over several seeds, in one folder, resumable.

A study recipe is a pipeline recipe (``base`` + named ``stages``, with ``sweep`` and ``generations``) plus::

    seeds: 3            # a count (seeds 0..n-1) or a list of seeds; ``kdlab study --seeds N`` overrides it
    baseline: ce        # the stage the report compares every other group against (paired by seed)
    stages:
      teacher: {model: {name: resnet20}, shared: true}   # trained once, with the base seed, and shared
      ce: {method: {name: ce}}
      kd: {method: {name: kd, teacher: "@teacher"}, sweep: {method.tau: [0.5, 4]}}

Every stage not marked ``shared`` runs once per seed in ``OUT/<stage>[-<sweep values>]-s<seed>``; a per-seed
teacher reference (``@stage``) takes the same seed's run. Runs whose recipe and teacher weights match a completed
run are reused and an interrupted run is resumed, so re-running a study trains only what is missing. With
``jobs > 1`` independent runs train side by side in worker processes, each with ``cores // jobs`` threads.
``OUT/study.json`` lists every run with its group, seed, status and metrics; ``kdlab report OUT`` summarises it.
"""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path

import yaml

from kdlab.config import DataConfig, apply_overrides, read_yaml
from kdlab.data import load_dataset
from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json, atomic_write_text
from kdlab.experiments.pipeline import PlannedRun, adopt_runs, deep_merge, expand_stages, run_stage, validate_runs
from kdlab.train.engine import TrainingDiverged
from kdlab.train.interrupt import RunInterrupted, StopSignals
from kdlab.store.rundir import RunDir
from kdlab.experiments.workers import stop_workers, worker_pool

STUDY_FILE = "study.json"
DEFAULT_SEEDS = 3


def study_seeds(where: str, value) -> list[int]:
    """``seeds`` as a list: a count n means 0..n-1; a list must hold distinct whole numbers >= 0."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value) \
            and len(set(value)) == len(value):
        return list(value)
    raise KdlabError(f"{where}: seeds must be a count >= 1 or a list of distinct whole numbers >= 0, got {value!r}")


def study_spec(path: str | Path, profiles: list[str | Path] = (), overrides: list[str] = ()) -> dict:
    """The study recipe at ``path`` with each profile (a partial study recipe, e.g. another data set and schedule)
    deep-merged over it in order, then the ``key=value`` overrides (dotted keys into the study recipe, e.g.
    ``base.data.path=/data/cifar-100-python`` or ``stages.kd.method.tau=2``). A profile serves several studies:
    its ``stages`` entries (e.g. the teacher's architecture) apply to the stages this study has, the others are
    left out."""
    spec = read_yaml(path)
    for profile in map(Path, profiles):
        extra = read_yaml(profile)
        stages = extra.get("stages")
        if stages is not None:
            if not isinstance(stages, dict):
                raise KdlabError(f"{profile}: 'stages' must be a mapping of stage name to recipe sections")
            extra = {**extra, "stages": {k: v for k, v in stages.items() if k in (spec.get("stages") or {})}}
        spec = deep_merge(spec, extra)
    return apply_overrides(spec, list(overrides))


def plan_study(path: str | Path, seeds: int | list[int] | None = None, profiles: list[str | Path] = (),
               overrides: list[str] = ()) -> tuple[list[PlannedRun], list[int], str | None]:
    """(runs in training order, seeds, baseline group) of the study recipe at ``path`` (with ``profiles`` and
    ``overrides``, see :func:`study_spec`), every run validated."""
    where = str(path)
    spec = study_spec(path, profiles, overrides)
    seed_list = study_seeds(where if seeds is None else "--seeds", spec.get("seeds", DEFAULT_SEEDS) if seeds is None else seeds)
    runs = expand_stages(where, spec, seeds=seed_list, extra_keys=("seeds", "baseline"))
    baseline = spec.get("baseline")
    if baseline is not None:
        per_seed_groups = {run.group for run in runs if run.seed is not None}
        if baseline not in per_seed_groups:
            raise KdlabError(f"{where}: baseline {baseline!r} is not a per-seed stage of the study "
                             f"(one of {', '.join(sorted(per_seed_groups))})")
    validate_runs(runs)
    return runs, seed_list, baseline


def run_study(path: str | Path, out: str | Path, seeds: int | list[int] | None = None, jobs: int = 1,
              quiet: bool = False, storage: str | None = None, heartbeat: int | None = None,
              grace: int | None = None, profiles: list[str | Path] = (), overrides: list[str] = (),
              reuse_from: list[str | Path] = ()) -> dict:
    """Train every missing run of the study at ``path`` (with ``profiles`` and ``overrides``, see
    :func:`study_spec`) under ``out``; return (and write) ``out/study.json``. ``out/study.yaml`` is the recipe as
    it ran, profiles and overrides applied. Completed runs of the study folders in ``reuse_from`` with the same
    stage key are copied in and reused (:func:`~kdlab.experiments.pipeline.adopt_runs`).

    With ``storage`` (an Optuna storage URL) the runs are a queue that every worker pointed at the same storage and
    ``out`` drains together (:mod:`kdlab.experiments.workqueue`); ``jobs`` workers start here."""
    if jobs < 1:
        raise KdlabError(f"--jobs must be >= 1, got {jobs}")
    runs, seed_list, baseline = plan_study(path, seeds, profiles, overrides)
    out = Path(out)
    adopt_runs(out, runs, list(reuse_from))
    out.mkdir(parents=True, exist_ok=True)
    if profiles or overrides:  # the recipe travels with its runs, as it ran
        atomic_write_text(out / "study.yaml", yaml.safe_dump(study_spec(path, profiles, overrides), sort_keys=False))
    elif Path(path).resolve() != (out / "study.yaml").resolve():
        shutil.copyfile(path, out / "study.yaml")
    if storage is not None:
        records: dict[str, dict] = {}
        failures = _drain_queue(path, out, runs, storage, jobs, quiet, heartbeat, grace)
        for run in runs:
            summary = RunDir(out / run.name).read_summary()
            if summary is not None and summary.get("status") == "completed":
                records[run.name] = {"run": run.name, "stage": run.stage, "group": run.group, "seed": run.seed,
                                     "status": "completed", "dir": str(out / run.name), "teacher": run.teacher,
                                     "best_by": summary["best_by"], "final": summary["final"], "best": summary["best"]}
            elif run.name not in failures:
                failures[run.name] = (summary or {}).get("error") or "not completed"
        return _finish(path, out, runs, seed_list, baseline, records, failures)

    def progress(records: dict, failures: dict) -> None:  # study.json after every run: reports can read it
        _write_record(path, out, runs, seed_list, baseline, records, failures, "pending")

    records, failures = train_runs(out, runs, jobs, quiet, on_progress=progress)
    return _finish(path, out, runs, seed_list, baseline, records, failures)


def _write_record(path, out: Path, runs: list[PlannedRun], seed_list, baseline, records: dict, failures: dict,
                  missing: str) -> dict:
    """Write ``out/study.json``: every run's record; runs without one are failed (with their error) or ``missing``."""
    record = {
        "study": str(Path(path).absolute()),
        "out": str(out.absolute()),
        "seeds": seed_list,
        "baseline": baseline,
        "runs": [records.get(run.name) or {"run": run.name, "stage": run.stage, "group": run.group, "seed": run.seed,
                                            "status": "failed" if run.name in failures else missing,
                                            "error": failures.get(run.name)} for run in runs],
    }
    atomic_write_json(out / STUDY_FILE, record)
    return record


def _finish(path, out: Path, runs: list[PlannedRun], seed_list, baseline, records: dict, failures: dict) -> dict:
    record = _write_record(path, out, runs, seed_list, baseline, records, failures, "failed")
    if failures:
        first = next(iter(failures))
        raise KdlabError(f"{len(failures)} of {len(runs)} study runs failed (first: {first}: {failures[first]}); "
                         f"fix the cause and run the study again to continue")
    return record


def train_runs(out: Path, runs: list[PlannedRun], jobs: int = 1, quiet: bool = True,
               on_progress=None) -> tuple[dict[str, dict], dict[str, str]]:
    """Train, resume or reuse every planned run under ``out``, each once its teacher has finished, ``jobs`` side by
    side (worker processes with ``cores // jobs`` threads each; one job shows progress bars unless ``quiet``);
    print a line per run and call ``on_progress(records, failures)`` after each. Return the records of the finished
    runs and the errors of the failed ones, by run name (a failed teacher fails its students)."""
    records: dict[str, dict] = {}
    failures: dict[str, str] = {}

    def finished(run: PlannedRun, record: dict | None, error: str | None) -> None:
        if record is not None:
            records[run.name] = record
            print(f"{run.name}: {record['status']}, test_acc {record['final']['test_acc']:.4f}", flush=True)
        else:
            failures[run.name] = error
            print(f"{run.name}: failed: {error}", file=sys.stderr, flush=True)
        if on_progress is not None:
            on_progress(records, failures)

    if jobs == 1:
        for run in runs:
            failed = next((name for name in run.teachers if name in failures), None)
            if failed:
                failures[run.name] = f"teacher {failed} failed"
                continue
            try:
                finished(run, run_stage(out, run, quiet), None)
            except (KdlabError, TrainingDiverged) as error:
                finished(run, None, str(error))
        return records, failures
    decode_sources(runs)
    pending = list(runs)
    running: dict[Future, PlannedRun] = {}
    interrupted: list[str] = []
    with worker_pool(jobs) as pool, StopSignals() as stop:
        forwarded = False
        while pending or running:
            if stop.requested and not forwarded:  # pass the stop on; start nothing new
                stop_workers(pool)
                pending, forwarded = [], True
            for run in list(pending):
                failed = next((name for name in run.teachers if name in failures), None)
                if failed:
                    pending.remove(run)
                    failures[run.name] = f"teacher {failed} failed"
                elif len(running) < jobs and all(name in records for name in run.teachers):
                    pending.remove(run)
                    running[pool.submit(run_stage, out, run, True)] = run
            if not running:
                break
            completed, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in completed:
                run = running.pop(future)
                try:
                    finished(run, future.result(), None)
                except RunInterrupted:
                    interrupted.append(run.name)
                except (KdlabError, TrainingDiverged) as error:
                    finished(run, None, str(error))
                except Exception as error:  # a bug or a diverged run in a worker: report it, keep the others going
                    finished(run, None, f"{type(error).__name__}: {error}")
    if stop.requested:
        names = f" ({', '.join(interrupted)} checkpointed)" if interrupted else ""
        raise RunInterrupted(stop.signal, f"stopped by {stop.name}{names}; run the same command again to continue")
    return records, failures


def decode_sources(runs: list[PlannedRun]) -> None:
    """Decode every data source the runs read into the cache, once, here: workers started afterwards read the cache
    instead of each decoding the same files at the same time."""
    seen = set()
    for run in runs:
        data = DataConfig.model_validate(run.raw.get("data", {}))
        key = (data.source, data.path, data.cache_dir, repr(sorted(data.options.items())))
        if key not in seen:
            seen.add(key)
            load_dataset(data.source, data.path, cache_dir=data.cache_dir, **data.options)


def _drain_queue(path, out: Path, runs, storage: str, jobs: int, quiet: bool, heartbeat, grace) -> dict[str, str]:
    from kdlab.experiments import workqueue
    from kdlab.experiments.optuna_storage import GRACE_SECONDS, HEARTBEAT_SECONDS

    timing = {"heartbeat": heartbeat or HEARTBEAT_SECONDS, "grace": grace or GRACE_SECONDS}
    name = workqueue.queue_name(path)
    if jobs == 1:
        return workqueue.drain(runs, out, storage, name, quiet, **timing)
    failures: dict[str, str] = {}
    with worker_pool(jobs) as pool:
        futures = [pool.submit(workqueue.drain, runs, out, storage, name, True, **timing) for _ in range(jobs)]
        for future in futures:
            failures.update(future.result())
    return failures

