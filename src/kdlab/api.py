"""kdlab from Python: train a recipe, load a run, evaluate it, in a notebook or a script.

``kdlab.train(recipe, out=...)`` is ``kdlab train`` as a function: ``recipe`` is a YAML path, a dict shaped like a
recipe file, or a :class:`~kdlab.config.Recipe`; ``overrides`` are the command's ``key=value`` strings. It returns
the run's summary (what ``summary.json`` holds). ``kdlab.load_run(dir)`` gives back the trained network with its
recipe and summary (:class:`~kdlab.analysis.runs.LoadedRun`); ``kdlab.evaluate(dir)`` is ``kdlab eval``. The loss
functions are ``kdlab.losses.*``, pure functions of logits and labels for your own loop. Errors in what you pass are
:class:`~kdlab.errors.KdlabError` with the command's one-line message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from kdlab.config import Recipe, load_recipe
from kdlab.errors import KdlabError


def train(recipe: str | Path | dict | Recipe, out: str | Path | None = None, *, overrides: list[str] = (),
          force: bool = False, quiet: bool = True, resume: bool = False) -> dict:
    """Train ``recipe`` into the run directory ``out`` (default ``runs/<method>-<model>-s<seed>-<time>``) and
    return its summary; ``resume=True`` continues the run in ``out`` (a completed one is returned as it is)."""
    from kdlab.train import engine

    if resume:
        if out is None:
            raise KdlabError("kdlab.train(resume=True) needs out=, the run directory to continue")
        return engine.resume(out, quiet=quiet)
    resolved = as_recipe(recipe, overrides)
    if out is None:
        out = Path("runs") / f"{resolved.method.name}-{resolved.model.name}-s{resolved.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    return engine.train(resolved, out, force=force, quiet=quiet)


def as_recipe(recipe: str | Path | dict | Recipe, overrides: list[str] = ()) -> Recipe:
    """A validated, fully resolved recipe from a YAML path, a dict or a Recipe (with ``key=value`` overrides)."""
    if isinstance(recipe, Recipe):
        return load_recipe(raw=recipe.to_dict(), overrides=list(overrides))
    if isinstance(recipe, dict):
        return load_recipe(raw=recipe, overrides=list(overrides))
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, list(overrides))
    raise KdlabError(f"a recipe is a YAML path, a dict or a kdlab Recipe, not {type(recipe).__name__}")


def load_run(run_dir: str | Path, checkpoint: Literal["final", "best"] = "final", device: str | None = None):
    """The completed run in ``run_dir``: ``.model`` (eval mode), ``.recipe``, ``.summary``, ``.runtime``."""
    from kdlab.analysis.runs import load_run as load

    return load(run_dir, checkpoint=checkpoint, device=device)


def evaluate(run_dir: str | Path, overrides: list[str] = (), checkpoint: Literal["final", "best"] = "final",
             splits: list[str] | None = None, out: str | Path | None = None) -> dict:
    """``kdlab eval``: every metric of the run's checkpoint on its splits (or on other data, by ``data.*``
    overrides), temperature scaling fitted on val; returns the record it writes to ``out``/metrics.json."""
    from kdlab.analysis.reevaluate import evaluate_run

    return evaluate_run(run_dir, list(overrides), checkpoint=checkpoint, splits=splits, out=out)


def batches(run, split: Literal["train", "val", "test"] = "test", batch_size: int | None = None):
    """The (inputs, labels) batches of ``split`` of a loaded run's data, on its device and normalised as the run
    saw them (no augmentation): what its model, or a model of your own loop, takes."""
    from kdlab.analysis.runs import eval_loader, load_run_data

    dataset = load_run_data(run)
    chosen = getattr(dataset, split, None)
    if chosen is None:
        raise KdlabError(f"{run.path}: the run's data has no {split} split")
    return eval_loader(run, chosen, batch_size).batches(0)
