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
from pathlib import Path


from kdlab.config import load_recipe, read_yaml
from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json
from kdlab.train.engine import resume, train
from kdlab.train.rundir import RunDir

STAGE_KEY_SUFFIX = "stage-key.json"  # OUT/<run>.stage-key.json: the hash a stage's run was started with
STAGE_OPTIONS = ("generations", "sweep")


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


def expand_stages(where: str, pipeline: dict) -> list[tuple[str, dict, str | None]]:
    """[(run name, raw recipe, name of the pipeline stage it belongs to)] in training order, with ``@`` references
    resolved to run names."""
    unknown = set(pipeline) - {"base", "stages"}
    if unknown:
        raise KdlabError(f"{where}: unknown key '{sorted(unknown)[0]}' (a pipeline has base and stages)")
    stages = pipeline.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise KdlabError(f"{where}: 'stages' must be a non-empty mapping of stage name to recipe sections")
    base = pipeline.get("base") or {}
    last_run: dict[str, str] = {}
    runs: list[tuple[str, dict, str]] = []
    for stage, spec in stages.items():
        if not isinstance(spec, dict):
            raise KdlabError(f"{where}: stages.{stage} must be a mapping of recipe sections")
        spec = dict(spec)
        generations = spec.pop("generations", 1)
        sweep = spec.pop("sweep", {})
        if not isinstance(generations, int) or generations < 1:
            raise KdlabError(f"{where}: stages.{stage}.generations must be a whole number >= 1")
        if not isinstance(sweep, dict) or any(not isinstance(v, list) or not v for v in sweep.values()):
            raise KdlabError(f"{where}: stages.{stage}.sweep must map dotted keys to non-empty lists")
        raw = deep_merge(base, spec)
        variants = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())] if sweep else [{}]
        for variant in variants:
            suffix = "".join(f"-{key.split('.')[-1]}{value}" for key, value in variant.items())
            previous = None
            for generation in range(1, generations + 1):
                name = f"{stage}{suffix}" + (f"-g{generation}" if generations > 1 else "")
                recipe = copy.deepcopy(raw)
                for key, value in variant.items():
                    set_dotted(recipe, key, value)
                method = recipe.get("method", {})
                if previous is not None:
                    method["teacher"] = f"@{previous}"
                teacher = method.get("teacher")
                if isinstance(teacher, str) and teacher.startswith("@"):
                    target = teacher[1:]
                    if target not in last_run and target not in {r[0] for r in runs}:
                        raise KdlabError(f"{where}: stages.{stage}: teacher {teacher} names no earlier stage")
                    method["teacher"] = "@" + last_run.get(target, target)
                runs.append((name, recipe, stage))
                previous = name
            last_run[stage] = previous
    return runs


def stage_key(recipe_dict: dict, teacher_dir: Path | None) -> str:
    digest = hashlib.sha256(json.dumps(recipe_dict, sort_keys=True).encode())
    if teacher_dir is not None:
        digest.update((teacher_dir / "checkpoint" / "model.safetensors").read_bytes())
        digest.update((teacher_dir / "checkpoint" / "best.safetensors").read_bytes())
    return digest.hexdigest()


def plan_pipeline(path: str | Path) -> list[tuple[str, dict, str]]:
    """The expanded stages of a pipeline recipe, each validated as a recipe (teachers are checked when it runs)."""
    runs = expand_stages(str(path), read_yaml(path))
    for _, raw, _ in runs:
        load_recipe(raw=_with_teacher(raw, Path(".")) if _teacher_ref(raw) else raw)
    return runs


def run_pipeline(path: str | Path, out: str | Path, quiet: bool = False) -> dict:
    """Train (or reuse) every stage of the pipeline recipe at ``path`` under ``out``; return the pipeline record."""
    runs = plan_pipeline(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"pipeline": str(Path(path).absolute()), "out": str(out.absolute()), "stages": []}
    for name, raw, stage in runs:
        reference = _teacher_ref(raw)
        teacher_dir = out / reference if reference else None
        recipe = load_recipe(raw=_with_teacher(raw, teacher_dir) if reference else raw)
        run = RunDir(out / name)
        key = stage_key({**recipe.to_dict(), "method": {**recipe.to_dict()["method"], "teacher": reference}}, teacher_dir)
        key_file = out / f"{name}.{STAGE_KEY_SUFFIX}"
        status = _stage_status(run, key_file, key)
        if status == "reused":
            summary = run.read_summary()
        elif status == "resumed":
            summary = resume(run.path, quiet=quiet)
        else:
            atomic_write_json(key_file, {"key": key, "stage": stage})
            summary = train(recipe, run.path, force=run.path.exists(), quiet=quiet)
        if not quiet or status == "reused":
            print(f"stage {name}: {status}, test_acc {summary['final']['test_acc']:.4f}", flush=True)
        record["stages"].append({"run": name, "stage": stage, "status": status, "dir": str(run.path),
                                 "teacher": reference, "best_by": summary["best_by"],
                                 "final": summary["final"], "best": summary["best"]})
    record["best_generation"] = _best_generations(record["stages"])
    atomic_write_json(out / "pipeline.json", record)
    return record


def _teacher_ref(raw: dict) -> str | None:
    teacher = raw.get("method", {}).get("teacher")
    return teacher[1:] if isinstance(teacher, str) and teacher.startswith("@") else None


def _with_teacher(raw: dict, teacher_dir: Path) -> dict:
    return deep_merge(raw, {"method": {"teacher": str(teacher_dir)}})


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
