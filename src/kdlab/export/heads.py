"""``kdlab export RUN --head peerN --out DIR``: one head of an online-distillation run as a run directory of its own.

A run of an online method (``kdlab.methods.names(heads=True)``) already writes its inference head (the group leader, a named peer
or the best peer) as ``checkpoint/model.safetensors``, a plain ``model.name`` network. ``export_head`` writes any other
branch the same way, from the run's final training state: a folder with the run's ``config.yaml``, a completed
``summary.json`` whose evaluation is that head's (and ``exported_from``), and ``checkpoint/model.safetensors``. It
loads wherever a run does: ``kdlab eval``, a teacher (``method.teacher``), :func:`kdlab.analysis.runs.load_run`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kdlab import methods, models
from kdlab.config import load_recipe, method_params
from kdlab.train.inputs import features_record, model_input_shape, recipe_dataset
from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json
from kdlab.store.checkpoint import load_state_into, load_tensors, read_state, save_tensors
from kdlab.store.rundir import RunDir


def export_head(run_dir: str | Path, head: str, out: str | Path) -> Path:
    """Write branch ``head`` (peerN or leader) of the completed online run ``run_dir`` to the new folder ``out``."""
    run = RunDir(Path(run_dir))
    summary = run.completed_summary()
    recipe = load_recipe(run.config)
    cls = methods.get(recipe.method.name)
    if not cls.has_heads:
        raise KdlabError(f"{run.path} trained a single network (method {recipe.method.name}); its model is "
                         f"{run.checkpoint / 'model.safetensors'} already")
    out = Path(out)
    if out.exists():
        raise KdlabError(f"export: {out} already exists")
    data = recipe.data
    dataset = recipe_dataset(data, recipe.seed)
    context = methods.MethodContext(dataset, data.mean, data.std, recipe.model.name,
                                    input_shape=model_input_shape(data, dataset),
                                    features=features_record(data, dataset))
    method = cls(models.create(recipe.model.name, len(dataset.classes), in_channels=context.in_channels,
                                   options=recipe.model.options),
                 method_params(recipe), context)
    state = read_state(run.checkpoint)
    load_state_into(method, load_tensors(run.checkpoint / state["method_file"], state["sha256"][state["method_file"]]),
                    run.checkpoint)
    network = method.export_network(head)  # refuses heads that are not branches

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "checkpoint").mkdir(parents=True)
        shutil.copyfile(run.config, partial / "config.yaml")
        save_tensors(partial / "checkpoint" / "model.safetensors", network.state_dict())
        exported = {k: v for k, v in summary.items() if k not in ("heads", "inference_head", "best", "evaluation")}
        exported["exported_from"] = {"run": str(run.path.resolve()), "head": head, "checkpoint": "final",
                                     "epoch": state.get("epoch")}
        head_metrics = summary.get("heads", {}).get(head)
        exported["evaluation"] = {"checkpoint": "final", **head_metrics} if head_metrics else None
        atomic_write_json(partial / "summary.json", exported)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left behind
        raise
    return out
