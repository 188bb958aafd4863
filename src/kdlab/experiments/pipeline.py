"""Pipelines: named stages trained in order, where a stage may distil from an earlier stage's run.

A pipeline recipe is YAML::

    base:                      # sections shared by every stage (deep-merged under each stage's own)
      data: {source: digits, val_size: 0.1}
      train: {epochs: 10}
    stages:
      teacher:   {model: {name: resnet8}}
      assistant: {model: {name: cnn_small8}, method: {name: kd, teacher: "@teacher"}}
      student:   {model: {name: cnn_small8}, method: {name: kd, teacher: "@assistant"}}
      born_again:                                    # k generations, each the next one's teacher
        model: {name: cnn_small8}
        method: {name: kd, alpha: 1.0, teacher: "@teacher"}
        generations: 3
      ls_teacher_sweep:                              # one stage per value: ls_teacher_sweep-tau1, -tau4
        model: {name: cnn_small8}
        method: {name: kd, teacher: "@teacher"}
        sweep: {method.tau: [1, 4]}

``"@name"`` is the run directory of stage ``name`` (which must come earlier; for a stage with generations, its last
generation). Each stage runs in ``OUT/<stage>`` (generations ``OUT/<stage>-g1`` ...). A stage whose resolved recipe
and teacher weights hash to the key of a completed run in its folder is reused, not re-run; an interrupted one is
resumed. ``OUT/pipeline.json`` lists every stage with its status, final and best metrics, and for generations the
best generation by validation accuracy (test accuracy without a val split).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from kdlab.config import load_recipe, read_yaml
from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json
from kdlab.train.engine import resume, train
from kdlab.store.rundir import RunDir

STAGE_KEY_SUFFIX = "stage-key.json"  # OUT/<run>.stage-key.json: the hash a stage's run was started with


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def set_dotted(raw: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        raw = raw.setdefault(key, {})
    raw[leaf] = value


@dataclass(frozen=True)
class PlannedRun:
    """One run of a pipeline or study: its folder ``name``, raw recipe (``@`` teachers resolved to run names), the
    pipeline ``stage`` it comes from, its ``group`` (stage plus sweep values: the runs that differ only by seed)
    and its ``seed`` (None outside a study, and for a study's shared stages)."""

    name: str
    raw: dict
    stage: str
    group: str
    seed: int | None = None

    @property
    def teacher(self) -> str | None:
        """The run that ``method.teacher`` names, if it names one."""
        return _reference(self.raw.get("method", {}).get("teacher"))

    @property
    def teachers(self) -> tuple[str, ...]:
        """Every run this one distils from: ``method.teacher`` and the ``@`` entries of ``method.teachers``."""
        method = self.raw.get("method", {})
        listed = method.get("teachers") if isinstance(method.get("teachers"), list) else []
        return tuple(dict.fromkeys(name for name in map(_reference, [method.get("teacher"), *listed]) if name))


def _reference(value) -> str | None:
    return value[1:] if isinstance(value, str) and value.startswith("@") else None


def expand_stages(where: str, pipeline: dict, seeds: list[int] | None = None, extra_keys: tuple = ()) -> list[PlannedRun]:
    """The runs of a pipeline (``seeds`` None) or of a study (every stage not marked ``shared: true`` once per
    seed, named ``<stage>-s<seed>``, its teachers taken from the same seed's runs or from shared stages), in
    training order. With ``models: [a, b]`` every stage that does not name its own ``model.name`` runs once per
    model (``<stage>-<model>[-s<seed>]``, same group: reports compare groups within each model), its teachers taken
    from the same model's runs first."""
    unknown = set(pipeline) - {"base", "stages", "models", *extra_keys}
    if unknown:
        allowed = ", ".join(["base", "stages", "models", *extra_keys])
        raise KdlabError(f"{where}: unknown key '{sorted(unknown)[0]}' (allowed: {allowed})")
    stages = pipeline.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise KdlabError(f"{where}: 'stages' must be a non-empty mapping of stage name to recipe sections")
    base = pipeline.get("base") or {}
    if not isinstance(base, dict):
        raise KdlabError(f"{where}: 'base' must be a mapping of recipe sections")
    models = pipeline.get("models")
    if models is not None and (not isinstance(models, list) or not models or len(set(map(str, models))) != len(models)
                               or not all(isinstance(m, str) and m for m in models)):
        raise KdlabError(f"{where}: 'models' must be a non-empty list of different model names")
    last_run: dict[tuple[str, str | None, int | None], str] = {}
    runs: list[PlannedRun] = []
    for stage, spec in stages.items():
        if not isinstance(spec, dict):
            raise KdlabError(f"{where}: stages.{stage} must be a mapping of recipe sections")
        spec = dict(spec)
        generations = spec.pop("generations", 1)
        sweep = spec.pop("sweep", {})
        shared = spec.pop("shared", False)
        if not isinstance(generations, int) or isinstance(generations, bool) or generations < 1:
            raise KdlabError(f"{where}: stages.{stage}.generations must be a whole number >= 1")
        if not isinstance(sweep, dict) or any(not isinstance(v, list) or not v for v in sweep.values()):
            raise KdlabError(f"{where}: stages.{stage}.sweep must map dotted keys to non-empty lists")
        if not isinstance(shared, bool):
            raise KdlabError(f"{where}: stages.{stage}.shared must be true or false")
        if shared and seeds is None:
            raise KdlabError(f"{where}: stages.{stage}.shared only applies to a study (kdlab study)")
        own_model = isinstance(spec.get("model"), dict) and "name" in spec["model"]
        stage_models = [None] if models is None or own_model else models
        raw = deep_merge(base, spec)
        variants = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())] if sweep else [{}]
        stage_seeds = [None] if seeds is None or shared else list(seeds)
        for model, variant in itertools.product(stage_models, variants):
            group = stage + "".join(f"-{key.split('.')[-1]}{value}" for key, value in variant.items())
            for seed in stage_seeds:
                previous = None
                for generation in range(1, generations + 1):
                    suffix = f"-g{generation}" if generations > 1 else ""
                    name = group + (f"-{model}" if model else "") + (f"-s{seed}" if seed is not None else "") + suffix
                    recipe = deep_merge(raw, {"model": {"name": model}}) if model else copy.deepcopy(raw)
                    for key, value in variant.items():
                        set_dotted(recipe, key, value)
                    if seed is not None:
                        recipe["seed"] = seed
                    method = recipe.setdefault("method", {})
                    if previous is not None:
                        method["teacher"] = f"@{previous}"
                    resolve = lambda value: ("@" + _resolve_teacher(where, stage, value[1:], model, seed, last_run, runs)
                                             if _reference(value) else value)
                    method["teacher"] = resolve(method.get("teacher"))
                    if method["teacher"] is None:
                        del method["teacher"]
                    if isinstance(method.get("teachers"), list):
                        method["teachers"] = [resolve(value) for value in method["teachers"]]
                    runs.append(PlannedRun(name, recipe, stage, group + suffix, seed))
                    previous = name
                last_run[(stage, model, seed)] = previous
    return runs


def _resolve_teacher(where, stage, target, model, seed, last_run, runs) -> str:
    """The run a ``@target`` names: the same model's and seed's run of stage ``target``, else a run of it that is
    not per model or not per seed (a shared stage), or a run name."""
    for key in ((target, model, seed), (target, None, seed), (target, model, None), (target, None, None)):
        if key in last_run:
            return last_run[key]
    if target in {run.name for run in runs}:
        return target
    if any(stage_name == target for stage_name, _, _ in last_run):
        raise KdlabError(f"{where}: stages.{stage}: teacher @{target} is a per-seed or per-model stage, and this "
                         f"stage is not (a shared stage, or one that names its own model, needs a shared teacher)")
    raise KdlabError(f"{where}: stages.{stage}: teacher @{target} names no earlier stage")


def stage_key(recipe_dict: dict, teacher_dirs: list[Path]) -> str:
    """The hash of a resolved recipe (its teachers given by run name, not path) and of its teachers' weights."""
    digest = hashlib.sha256(json.dumps(recipe_dict, sort_keys=True).encode())
    for teacher_dir in teacher_dirs:
        digest.update((teacher_dir / "checkpoint" / "model.safetensors").read_bytes())
        digest.update((teacher_dir / "checkpoint" / "best.safetensors").read_bytes())
    return digest.hexdigest()


def plan_pipeline(path: str | Path) -> list[PlannedRun]:
    """The expanded stages of a pipeline recipe, each validated as a recipe (teachers are checked when it runs)."""
    runs = expand_stages(str(path), read_yaml(path))
    validate_runs(runs)
    return runs


def validate_runs(runs: list[PlannedRun]) -> None:
    for run in runs:
        load_recipe(raw=_with_teachers(run.raw, Path(".")))


def run_stage(out: Path, run: PlannedRun, quiet: bool = False) -> dict:
    """Train, resume or reuse one planned run in ``out/<run.name>``; return its record for pipeline.json."""
    reference = run.teacher
    recipe, key = _recipe_and_key(out, run)
    folder = RunDir(out / run.name)
    key_file = out / f"{run.name}.{STAGE_KEY_SUFFIX}"
    status = _stage_status(folder, key_file, key)
    if status == "reused":
        summary = folder.read_summary()
    elif status == "resumed":
        summary = resume(folder.path, quiet=quiet)
    else:
        _set_aside_if_completed(folder, key_file)
        atomic_write_json(key_file, {"key": key, "stage": run.stage})
        summary = train(recipe, folder.path, force=folder.path.exists(), quiet=quiet)
    return {"run": run.name, "stage": run.stage, "group": run.group, "seed": run.seed, "status": status,
            "dir": str(folder.path), "teacher": reference, "best_by": summary["best_by"],
            "final": summary["final"], "best": summary["best"]}


def _recipe_and_key(out: Path, run: PlannedRun):
    """The run's resolved recipe (its teacher's folder filled in) and its stage key."""
    recipe = load_recipe(raw=_with_teachers(run.raw, out))
    resolved = recipe.to_dict()
    resolved.pop("logging", None)  # trackers observe a run, they do not make it another run
    method = {**resolved["method"], "teacher": run.teacher}
    listed = run.raw["method"].get("teachers")
    if isinstance(listed, list) and isinstance(method.get("teachers"), list):
        method["teachers"] = [_reference(value) or resolved_value for value, resolved_value in zip(listed, method["teachers"])]
    return recipe, stage_key({**resolved, "method": method}, [out / name for name in run.teachers])


def adopt_runs(out: Path, runs: list[PlannedRun], sources: list[Path]) -> list[str]:
    """Copy into ``out`` every teacher-free planned run that ``out`` does not have yet and a source folder (another
    study or pipeline folder) holds completed under the same stage key: the same resolved recipe, seed and data, so
    the same run, which is then reused instead of trained again (e.g. the CE baseline that several studies on one
    profile share), under whatever name the source gave it. Runs that distil from a teacher are never adopted: their key hashes the teacher's weights in
    ``out``. Each copy lands whole (a temporary folder renamed into place). Returns the adopted runs' names."""
    sources = [Path(source) for source in sources]
    for source in sources:
        if not source.is_dir():
            raise KdlabError(f"--reuse-from {source}: not a folder")
    if not sources:  # nothing to adopt: no recipe is resolved at start-up
        return []
    out.mkdir(parents=True, exist_ok=True)
    adopted = []
    by_key = {source: _names_by_key(source) for source in sources}  # read each source's keys once
    for run in runs:
        if run.teachers or (out / run.name).exists():
            continue
        _, key = _recipe_and_key(out, run)
        for source in sources:
            name = next((name for name in by_key[source].get(key, [])
                         if _stage_status(RunDir(source / name), source / f"{name}.{STAGE_KEY_SUFFIX}", key)
                         == "reused"), None)
            if name is None:
                continue
            staging = out / f".{run.name}.adopting"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source / name, staging)
            atomic_write_json(out / f"{run.name}.{STAGE_KEY_SUFFIX}", {"key": key, "stage": run.stage})
            staging.replace(out / run.name)
            adopted.append(run.name)
            break
    return adopted


def run_pipeline(path: str | Path, out: str | Path, quiet: bool = False) -> dict:
    """Train (or reuse) every stage of the pipeline recipe at ``path`` under ``out``; return the pipeline record."""
    runs = plan_pipeline(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"pipeline": str(Path(path).absolute()), "out": str(out.absolute()), "stages": []}
    for run in runs:
        stage_record = run_stage(out, run, quiet)
        if not quiet or stage_record["status"] == "reused":
            print(f"stage {run.name}: {stage_record['status']}, test_acc {stage_record['final']['test_acc']:.4f}", flush=True)
        record["stages"].append(stage_record)
    record["best_generation"] = _best_generations(record["stages"])
    atomic_write_json(out / "pipeline.json", record)
    return record


def _with_teachers(raw: dict, out: Path) -> dict:
    """``raw`` with every ``@run`` teacher (``method.teacher`` and ``method.teachers`` entries) made ``out/run``."""
    method = raw.get("method", {})
    place = lambda value: str(out / _reference(value)) if _reference(value) else value
    filled = {}
    if _reference(method.get("teacher")):
        filled["teacher"] = place(method["teacher"])
    if isinstance(method.get("teachers"), list):
        filled["teachers"] = [place(value) for value in method["teachers"]]
    return deep_merge(raw, {"method": filled}) if filled else raw


def _names_by_key(folder: Path) -> dict[str, list[str]]:
    """The runs of a study or pipeline folder by the stage key they were started with. A run is found under any
    name, so a study whose stages are named differently (``ce-s0`` vs ``ce-resnet8-s0``) still adopts it."""
    names: dict[str, list[str]] = {}
    for key_file in sorted(folder.glob(f"*.{STAGE_KEY_SUFFIX}")):
        try:
            key = json.loads(key_file.read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        names.setdefault(key, []).append(key_file.name[: -len(STAGE_KEY_SUFFIX) - 1])
    return names


SUPERSEDED = ".superseded"  # OUT/.superseded/<run>-<its key>: completed runs whose stage changed


def _set_aside_if_completed(folder: RunDir, key_file: Path) -> None:
    """A completed run about to be trained again (its recipe, its teacher's weights or kdlab's schema changed the
    stage key) is moved, with its key file, to ``OUT/.superseded/<run>-<old key>`` instead of being overwritten:
    hours of training are never deleted by a re-run. Unfinished runs are simply started again."""
    summary = folder.read_summary() if folder.path.exists() else None
    if summary is None or summary.get("status") != "completed":
        return
    try:
        stored = str(json.loads(key_file.read_text())["key"])[:12]
    except (OSError, ValueError, KeyError, TypeError):
        stored = "unkeyed"
    place = folder.path.parent / SUPERSEDED / f"{folder.path.name}-{stored}"
    if place.exists():
        shutil.rmtree(place)
    place.parent.mkdir(parents=True, exist_ok=True)
    folder.path.replace(place)
    if key_file.exists():
        key_file.replace(place.parent / f"{place.name}.{STAGE_KEY_SUFFIX}")
    print(f"{folder.path.name}: its stage changed since it completed; the old run is kept in {place}", flush=True)


def _stage_status(run: RunDir, key_file: Path, key: str) -> str:
    """``reused`` (completed with this key), ``resumed`` (started with this key, unfinished) or ``trained``."""
    try:
        stored = json.loads(key_file.read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        stored = None
    summary = run.read_summary() if run.path.exists() else None
    if stored != key or summary is None:
        return "trained"
    return "reused" if summary.get("status") == "completed" else "resumed"


def _best_generations(stages: list[dict]) -> dict:
    """For stages with several generations: the generation with the best selection metric."""
    best = {}
    for stage, group in itertools.groupby(stages, key=lambda s: s["stage"]):
        group = [s for s in group if "-g" in s["run"]]
        if len(group) > 1:
            winner = max(group, key=lambda s: s["best"][s["best_by"]])
            best[stage] = {"run": winner["run"], winner["best_by"]: winner["best"][winner["best_by"]]}
    return best
