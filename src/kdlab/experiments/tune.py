"""``kdlab tune``: hyper-parameter search over any recipe key with Optuna, spread over local worker processes and, with
a shared database (``--storage postgresql://...``), over any number of machines running the same command.

A search space is a YAML mapping from dotted recipe keys to distributions::

    method.eps:  {low: 0.01, high: 0.5, log: true}     # float (uniform, or log-uniform)
    method.tau:  {low: 1, high: 20}
    method.beta: {choices: [0.1, 0.2, 0.5]}             # categorical
    train.batch_size: {low: 32, high: 256, step: 32, int: true}

Each trial is an ordinary run directory ``OUT/trial-NNNN`` of the recipe with the trial's values. The objective is
the validation accuracy of the final epoch (``--objective best``: of the best epoch); the test split is never used
to choose. Trials report their validation accuracy every epoch, and Optuna's median pruner stops those below the
median of earlier trials at the same epoch (after ``--startup`` complete trials and a third of the epochs); a pruned
run keeps status ``pruned``. The sampler is TPE with ``--seed``.

Exactly ``--trials`` trials are run over all workers: a worker that asks for a trial beyond the budget marks it
failed (user attribute ``surplus``) without training. A worker killed mid-trial leaves a trial whose heartbeat
stops; another worker fails it after the grace period and re-runs its parameters as a retry (``kdlab.experiments.optuna_storage``).

Pre-emption: SIGTERM or SIGINT to ``kdlab tune`` reaches every worker (forwarded as SIGTERM); each finishes its
step, checkpoints its trial's run and ends it ``interrupted`` (the trial is failed with the user attribute
``interrupted`` naming its run), and the command exits 128 + the signal. The same command again queues each
interrupted trial once more with its parameters, and the retry continues that run directory from its checkpoint
(:func:`kdlab.train.engine.resume`), so the budget and the trial's result are those of an uninterrupted search.

Transfer (``--transfer-models m1,m2``, after the search): the best setting found on the recipe's model is trained on
each listed model, next to that model with the recipe's own values (no tuning), and with ``--tune-transfer`` also
tuned on that model itself with the same budget: ``OUT/tune.md`` reports the three per model, so a setting that
transfers (LSR-OS-TC's claim) and one that does not (Tf-KD reg's, whose best setting is model-dependent) show as
such.
"""

from __future__ import annotations

import copy
import json
import signal
import time
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdlab.config import load_recipe, raise_validation, read_yaml
from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json, atomic_write_text
from kdlab.experiments.optuna_storage import (GRACE_SECONDS, HEARTBEAT_SECONDS, default_url, import_optuna, open_storage,
                                  retried_from, retry_callback, worker_count)
from kdlab.experiments.workers import stop_workers, threads_per_worker, worker_pool
from kdlab.train.interrupt import RunInterrupted, StopSignals

OBJECTIVES = ("final", "best")


class Distribution(BaseModel):
    """One key's search distribution: ``choices`` (categorical), or ``low``/``high`` with ``log``, ``step``, ``int``."""

    model_config = ConfigDict(extra="forbid")
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    int_: bool = Field(False, alias="int")

    @model_validator(mode="after")
    def _one_kind(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs choices, or low and high")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log distribution needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    def suggest(self, trial, key: str):
        if self.choices is not None:
            return trial.suggest_categorical(key, self.choices)
        if self.int_:
            return trial.suggest_int(key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        low, high = (int(self.low), int(self.high)) if self.int_ else (self.low, self.high)
        return [low, high]


def load_space(path: str | Path) -> dict[str, Distribution]:
    raw = read_yaml(path)
    space = {}
    for key, spec in raw.items():
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise KdlabError(f"{path}: {key!r} is not a dotted recipe key (e.g. method.eps)")
        if not isinstance(spec, dict):
            raise KdlabError(f"{path}: {key}: give a mapping (choices, or low/high), got {spec!r}")
        try:
            space[key] = Distribution.model_validate(spec)
        except ValidationError as error:
            raise_validation(str(path), error, prefix=(key,))
    if not space:
        raise KdlabError(f"{path}: the search space is empty")
    return space


def with_values(raw: dict, values: dict[str, Any]) -> dict:
    """``raw`` with each dotted key set to its value (sections created as needed)."""
    raw = copy.deepcopy(raw)
    for key, value in values.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise KdlabError(f"search space key {key}: '{part}' is not a recipe section")
            node = child
        node[parts[-1]] = value
    return raw


def check_space(raw: dict, space: dict[str, Distribution], where: str) -> None:
    """Every extreme value of every key gives a valid recipe, and the recipe has a validation split: errors come
    now, not from a worker hours later."""
    for key, distribution in space.items():
        for value in distribution.extremes():
            try:
                load_recipe(raw=with_values(raw, {key: value}))
            except KdlabError as error:
                raise KdlabError(f"{where}: {key} = {value!r} does not give a valid recipe: {error}") from None
    recipe = load_recipe(raw=raw)
    if not recipe.data.val_size:
        raise KdlabError(f"{where}: tuning needs a validation split (set data.val_size): the test split is never "
                         f"used to choose")


# ------------------------------------------------------------------------------------------------------- workers


def _objective_factory(optuna, study, raw: dict, space: dict[str, Distribution], out: Path, trials: int,
                       objective: str, prefix: str):
    from kdlab.train.engine import RunStopped, TrainingDiverged, resume, train

    def run_trial(trial) -> float:
        values = {key: distribution.suggest(trial, key) for key, distribution in space.items()}
        retry_of = retried_from(optuna, study._storage.get_trial(trial._trial_id))  # noqa: SLF001
        continued = trial.user_attrs.get("interrupted")  # the run of the signalled trial this one retries
        if retry_of is None:
            fresh = [t.number for t in study.get_trials(deepcopy=False)
                     if retried_from(optuna, t) is None and t.number <= trial.number]
            if len(fresh) > trials:  # beyond the budget: another worker started the last trial first
                trial.set_user_attr("surplus", True)
                raise _Surplus()
        elif continued and _continued_by_another(study, trial, continued):
            trial.set_user_attr("surplus", True)  # two commands queued the same interrupted trial again
            raise _Surplus()
        run_dir = Path(continued) if continued else out / f"{prefix}trial-{trial.number:04d}"
        trial.set_user_attr("run", str(run_dir))
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        if continued:
            trial.set_user_attr("interrupted", None)
            trial.set_user_attr("continues", str(run_dir))

        def report(record: dict) -> None:
            if "val_acc" not in record:  # an epoch without evaluation (train.eval_every)
                return
            trial.report(record["val_acc"], record["epoch"])
            if trial.should_prune():
                raise RunStopped("pruned", f"pruned by Optuna at epoch {record['epoch']} (val_acc "
                                           f"{record['val_acc']:.4f} below the median of earlier trials)")

        try:
            if continued and (run_dir / "config.yaml").is_file():
                summary = resume(run_dir, quiet=True, on_epoch=report)
            else:
                summary = train(load_recipe(raw=with_values(raw, values)), run_dir, force=run_dir.exists(),
                                quiet=True, on_epoch=report)
        except RunInterrupted:
            trial.set_user_attr("interrupted", str(run_dir))  # checkpointed: the next command continues it
            raise
        except RunStopped:
            raise optuna.TrialPruned() from None
        except TrainingDiverged as error:
            trial.set_user_attr("error", str(error))
            return float("nan")  # recorded as a failed trial; the search goes on
        trial.set_user_attr("test_acc", summary["final"]["test_acc"])
        return summary["final"]["val_acc"] if objective == "final" else summary["best"]["val_acc"]

    return run_trial


class _Surplus(Exception):
    pass


def _continued_by_another(study, trial, run_dir: str) -> bool:
    """Whether a trial numbered before ``trial``, not failed, already continues (or is queued to continue)
    ``run_dir``."""
    return any(t.number < trial.number and t.state.name != "FAIL" and run_dir in (t.user_attrs.get("interrupted"),
                                                                                t.user_attrs.get("continues"))
               for t in study.get_trials(deepcopy=False))


def _queue_interrupted(optuna, study) -> None:
    """Queue each trial a signal stopped once more, with its parameters (Optuna's retry, as for a crashed worker):
    its retry continues the interrupted run directory."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    queue_again = retry_callback(optuna)
    for t in trials:
        if t.state.name == "FAIL" and t.user_attrs.get("interrupted") and t.number not in retried:
            queue_again(study, t)


def _work(args: dict) -> None:
    """One worker: run trials of the shared study until the budget is spent."""
    import torch

    torch.set_num_threads(args["threads"])
    optuna = import_optuna()
    storage = open_storage(args["storage"], args["heartbeat"], args["grace"])
    study = optuna.load_study(study_name=args["study_name"], storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=args["seed"] + args["worker"]),
                              pruner=_pruner(optuna, args))
    run_trial = _objective_factory(optuna, study, args["raw"], {k: Distribution.model_validate(v) for k, v in
                                   args["space"].items()}, Path(args["out"]), args["trials"], args["objective"],
                                   args["prefix"])
    with StopSignals() as stop:  # between trials; a trial's own run takes the signal while it trains
        while not stop.requested:
            if _work_once(optuna, study, run_trial, args):
                return
        raise RunInterrupted(stop.signal, f"stopped by {stop.name} between trials")


def _work_once(optuna, study, run_trial, args: dict) -> bool:
    """Run one trial (or wait for the retries of crashed ones); return whether the budget is spent."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    optuna.storages.fail_stale_trials(study)
    if len(study.get_trials(deepcopy=False, states=states)) >= args["trials"]:
        return True
    study.optimize(run_trial, n_trials=1, catch=(_Surplus,), gc_after_trial=True)
    last = study.get_trials(deepcopy=False)[-1:]
    if last and last[0].user_attrs.get("surplus"):
        # the budget is taken; wait for crashed trials' retries, if any, before leaving
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,
                                                           optuna.trial.TrialState.WAITING))
        if not running:
            return True
        time.sleep(2)
    return False


def _pruner(optuna, args: dict):
    return optuna.pruners.MedianPruner(n_startup_trials=args["startup"], n_warmup_steps=max(1, args["epochs"] // 3))


def run_tune(recipe_path: str | Path, space_path: str | Path, trials: int, out: str | Path | None = None,
             storage: str | None = None, workers: int | None = None, study_name: str | None = None,
             objective: str = "final", seed: int = 0, startup: int = 5, transfer_models: list[str] | None = None,
             tune_transfer: bool = False, quiet: bool = False, heartbeat: int = HEARTBEAT_SECONDS,
             grace: int = GRACE_SECONDS) -> dict:
    """Search ``space`` for ``recipe`` with ``trials`` trials; write and return ``OUT/tune.json`` (and tune.md)."""
    if trials < 1:
        raise KdlabError(f"--trials must be >= 1, got {trials}")
    if objective not in OBJECTIVES:
        raise KdlabError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    raw = read_yaml(recipe_path)
    space = load_space(space_path)
    check_space(raw, space, str(space_path))
    out = Path(out) if out is not None else Path("runs") / f"tune-{Path(recipe_path).stem}"
    out.mkdir(parents=True, exist_ok=True)
    url = storage or default_url(out)
    name = study_name or f"kdlab-tune-{Path(recipe_path).stem}"
    if heartbeat < 1 or grace <= heartbeat:
        raise KdlabError(f"--heartbeat must be >= 1 s and --grace longer than it, got {heartbeat} and {grace}")
    timing = {"heartbeat": heartbeat, "grace": grace}
    record = _search(raw, space, trials, out, url, name, worker_count(workers), objective, seed, startup, "", quiet,
                     timing)
    if transfer_models:
        record["transfer"] = _transfer(raw, space, trials, out, url, name, worker_count(workers), objective, seed,
                                       startup, record, transfer_models, tune_transfer, quiet, timing)
    atomic_write_json(out / "tune.json", record)
    atomic_write_text(out / "tune.md", _markdown(record))
    return record


def _search(raw, space, trials, out, url, name, workers, objective, seed, startup, prefix, quiet, timing) -> dict:
    optuna = import_optuna()
    storage = open_storage(url, timing["heartbeat"], timing["grace"])
    _queue_interrupted(optuna, optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                                   load_if_exists=True))
    epochs = load_recipe(raw=raw).train.epochs
    args = {"storage": url, "study_name": name, "raw": raw, "space": {k: v.model_dump(by_alias=True, exclude_none=True)
            for k, v in space.items()}, "out": str(out), "trials": trials, "objective": objective, "seed": seed,
            "startup": startup, "epochs": epochs, "threads": threads_per_worker(workers), "prefix": prefix, **timing}
    try:
        _run_workers(args, workers)
    except RunInterrupted as stop:
        raise RunInterrupted(stop.signum, f"tune {name} stopped by {signal.Signals(stop.signum).name}, its running "
                                          f"trials checkpointed; run the same command again to continue") from None
    study = optuna.load_study(study_name=name, storage=storage)
    rows = [_trial_row(t) for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] == r["value"]]
    if not complete:
        raise KdlabError(f"tune: no trial of {name} completed (see {out})")
    best = max(complete, key=lambda r: (r["value"], -r["number"]))
    if not quiet:
        print(f"{name}: {len(complete)} complete, best trial {best['number']} val_acc {best['value']:.4f} "
              f"{best['params']}", flush=True)
    return {"study": name, "storage": _shown(url), "objective": f"{objective} val_acc", "trials": trials,
            "space": args["space"], "best": best, "trials_run": rows}


def _run_workers(args: dict, workers: int) -> None:
    """Run :func:`_work` in this process or in ``workers`` processes; a stop signal is forwarded to each worker,
    and raises :class:`RunInterrupted` once all have checkpointed."""
    if workers == 1:
        _work({**args, "worker": 0})
        return
    with worker_pool(workers) as pool, StopSignals() as stop:
        futures = [pool.submit(_work, {**args, "worker": k}) for k in range(workers)]
        forwarded = False
        while not all(future.done() for future in futures):
            wait(futures, timeout=0.5)
            if stop.requested and not forwarded:
                stop_workers(pool)
                forwarded = True
        errors = [future.exception() for future in futures]
    if stop.requested:
        raise RunInterrupted(stop.signal, f"stopped by {stop.name}")
    for error in errors:
        if error is not None:
            raise error


def _trial_row(trial) -> dict:
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            "run": trial.user_attrs.get("run"), "test_acc": trial.user_attrs.get("test_acc"),
            "retry_of": trial.user_attrs.get("retry_of"), "error": trial.user_attrs.get("error")}


def _shown(url: str) -> str:
    from kdlab.experiments.optuna_storage import _redacted

    return _redacted(url)


def _transfer(raw, space, trials, out, url, name, workers, objective, seed, startup, source, models, tune_each,
              quiet, timing) -> list[dict]:
    from kdlab.train.engine import train

    best = source["best"]["params"]
    rows = []
    for model in models:
        target = with_values(raw, {"model.name": model})
        load_recipe(raw=target)  # a bad model name fails here, before training
        entry = {"model": model}
        for label, values in (("transferred", best), ("untuned", {})):
            run_dir = out / f"transfer-{model}-{label}"
            summary = train(load_recipe(raw=with_values(target, values)), run_dir, force=run_dir.exists(), quiet=True)
            entry[label] = {"run": str(run_dir), "val_acc": summary["final"]["val_acc"],
                            "test_acc": summary["final"]["test_acc"], "params": values}
        if tune_each:
            own = _search(target, space, trials, out, url, f"{name}-{model}", workers, objective, seed, startup,
                          f"{model}-", True, timing)
            run_dir = Path(own["best"]["run"])
            summary = json.loads((run_dir / "summary.json").read_text())
            entry["tuned"] = {"run": str(run_dir), "val_acc": summary["final"]["val_acc"],
                              "test_acc": summary["final"]["test_acc"], "params": own["best"]["params"]}
        rows.append(entry)
        if not quiet:
            print(f"transfer to {model}: " + ", ".join(f"{k} test_acc {v['test_acc']:.4f}" for k, v in entry.items()
                                                        if isinstance(v, dict)), flush=True)
    return rows


def _markdown(record: dict) -> str:
    lines = [f"# kdlab tune: {record['study']}", "",
             f"Objective: {record['objective']} (maximised; test accuracy shown, never used to choose). Storage: "
             f"`{record['storage']}`. Budget: {record['trials']} trials.", "",
             "| trial | state | val acc | test acc | " + " | ".join(record["space"]) + " | run |",
             "|---|---|---|---|" + "---|" * len(record["space"]) + "---|"]
    for row in record["trials_run"]:
        value = f"{row['value']:.4f}" if isinstance(row["value"], float) and row["value"] == row["value"] else "-"
        test = f"{row['test_acc']:.4f}" if row.get("test_acc") is not None else "-"
        params = " | ".join(_fmt(row["params"].get(k)) for k in record["space"])
        lines.append(f"| {row['number']} | {row['state'].lower()} | {value} | {test} | {params} | {row['run'] or '-'} |")
    best = record["best"]
    lines += ["", f"Best: trial {best['number']}, val acc {best['value']:.4f}, {best['params']}."]
    if record.get("transfer"):
        lines += ["", "## Transfer of the best setting to other models", "",
                  "| model | transferred: val / test | untuned: val / test | tuned on it: val / test | its own best |",
                  "|---|---|---|---|---|"]
        for entry in record["transfer"]:
            cells = [f"{entry[k]['val_acc']:.4f} / {entry[k]['test_acc']:.4f}" if k in entry else "-"
                     for k in ("transferred", "untuned", "tuned")]
            own = entry["tuned"]["params"] if "tuned" in entry else "-"
            lines.append(f"| {entry['model']} | {cells[0]} | {cells[1]} | {cells[2]} | {own} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def dump_space(space: dict[str, Distribution]) -> str:
    return yaml.safe_dump({k: v.model_dump(by_alias=True, exclude_none=True) for k, v in space.items()})
