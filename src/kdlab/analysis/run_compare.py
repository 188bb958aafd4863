"""``kdlab runs compare``: a few runs side by side, what they reached and how their recipes differ.

For each run: its state (:mod:`kdlab.analysis.run_table`), the final and the best epoch's metrics, and for all of
them together the recipe keys whose values differ between the runs, dotted (``method.tau: 4 | 1``), found by
walking their ``config.yaml`` files (the fully resolved recipes, so a default that changed between kdlab versions
shows as a difference too). ``--plot`` overlays their per-epoch curves with the report's figure
(:func:`kdlab.analysis.plots.training_curves`).

"Best" is the run's best checkpoint as the run itself chose it (``summary.json``'s ``best``, picked by its
``best_by``: val_acc with a val split, else test_acc), what ``kdlab report --selection best`` reads; a run still
running (or one that died) gets the same rule applied to its metrics.jsonl so far.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from kdlab.analysis.run_table import (KEY_METRICS, RUNNING, RunView, find_runs, finite, format_seconds, inspect_run,
                                      is_run_dir, run_row)
from kdlab.errors import KdlabError

CURVES = ("train_loss", "val_acc", "test_acc")
#: up to this many runs are laid out as columns; more as one row each
SIDE_BY_SIDE = 6
_ABSENT = object()


@dataclass
class Comparison:
    """``record``: the JSON-ready comparison; ``histories``: each run's metrics.jsonl records by label (to plot)."""

    record: dict
    histories: dict[str, list[dict]]


def compare_runs(paths: list[str | Path], metric: str = "test_acc") -> Comparison:
    """Compare the runs ``paths`` name: run directories, or folders (a study, a pipeline) standing for every run
    in them."""
    views = [inspect_run(path) for path in resolve_runs(paths)]
    labels = short_labels([view.path for view in views])
    if not any(metric in record for view in views for record in [*view.history, *_summary_records(view)]):
        raise KdlabError(f"runs compare --metric: none of the runs recorded {metric!r} (try test_acc, val_acc, "
                         f"test_nll, test_ece or train_loss)")
    keys = list(dict.fromkeys([metric, *KEY_METRICS]))
    runs = []
    for label, view in zip(labels, views):
        row = run_row(view)
        runs.append({"label": label, **{k: row[k] for k in ("path", "state", "problems", "method", "model", "teacher",
                                                             "epoch", "epochs", "wall_seconds")},
                     "final": _final(view, keys), "best": _best(view, keys)})
    record = {"metric": metric, "runs": runs, "config_differences": config_differences([v.config for v in views])}
    return Comparison(record, {label: view.history for label, view in zip(labels, views)})


def resolve_runs(paths: list[str | Path]) -> list[Path]:
    """The run directories ``paths`` stand for, without repeats, in the order given (a folder's runs by path)."""
    found: dict[str, Path] = {}
    for path in map(Path, paths):
        runs = [path] if path.is_dir() and is_run_dir(path) else sorted(find_runs([path], "runs compare"))
        for run in runs:
            found.setdefault(str(run.absolute()), run)
    if len(found) < 2:
        raise KdlabError(f"runs compare needs at least two runs, {', '.join(map(str, paths))} "
                         f"{'hold' if len(paths) > 1 else 'holds'} {len(found)}")
    return list(found.values())


def short_labels(paths: list[Path]) -> list[str]:
    """The shortest path tails that tell the runs apart: ``ce-s0``, or ``fmnist/ce-s0`` beside ``cifar/ce-s0``."""
    parts = [Path(p).absolute().parts for p in paths]
    for depth in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def _summary_records(view: RunView) -> list[dict]:
    summary = view.summary or {}
    return [r for r in (summary.get("final"), summary.get("best")) if isinstance(r, dict)]


def _at_epoch(view: RunView, record: dict, keys: list[str]) -> dict:
    """``keys`` of ``record``, each one it lacks (the summary keeps test and val metrics only) taken from the
    metrics.jsonl record of the same epoch."""
    epoch = record.get("epoch")
    line = next((r for r in reversed(view.history) if r.get("epoch") == epoch), {}) if epoch is not None else {}
    return {"epoch": epoch, **{key: finite(record.get(key, line.get(key))) for key in keys}}


def _final(view: RunView, keys: list[str]) -> dict | None:
    record = view.metrics_record
    if record is None:
        return None
    if not any(key in record for key in keys) and view.history:  # e.g. --metric train_loss on a completed run
        record = view.history[-1]
    return _at_epoch(view, record, keys)


def _best(view: RunView, keys: list[str]) -> dict | None:
    summary = view.summary or {}
    best, by = summary.get("best"), summary.get("best_by")
    if view.state == RUNNING or not isinstance(best, dict):
        by = by or ("val_acc" if any("val_acc" in r for r in view.history) else "test_acc")
        scored = [r for r in view.history if finite(r.get(by)) is not None]
        best = max(scored, key=lambda r: r[by]) if scored else None  # the first of equals, as the run keeps it
    if best is None:
        return None
    return {**_at_epoch(view, best, keys), "by": by}


# ---------------------------------------------------------------------------------------------------- recipes


def flatten(config: dict, prefix: str = "") -> dict:
    """A recipe as {dotted key: value}; lists and empty mappings are values."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(configs: list[dict | None]) -> list[dict]:
    """The dotted recipe keys whose values are not the same in every readable config, in recipe order:
    ``[{"key": "method.tau", "values": [4.0, 1.0]}]`` (None for a run whose recipe lacks the key or whose
    config.yaml is missing or unreadable)."""
    flat = [flatten(config) if isinstance(config, dict) else None for config in configs]
    readable = [f for f in flat if f is not None]
    keys = list(dict.fromkeys(key for f in readable for key in f))
    sections = list(dict.fromkeys(key.split(".")[0] for key in keys))
    keys.sort(key=lambda key: sections.index(key.split(".")[0]))  # a section's keys together, whichever run has them
    out = []
    for key in keys:
        values = [f.get(key, _ABSENT) for f in readable]
        if any(_canonical(v) != _canonical(values[0]) for v in values[1:]):
            out.append({"key": key, "values": [None if f is None else f.get(key) for f in flat],
                        "absent": [f is not None and key not in f for f in flat]})
    return out


def _canonical(value) -> str:
    return "\0absent" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def format_value(value) -> str:
    """A recipe value as a recipe would spell it: 4.0 -> 4, None -> null, lists in brackets."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------------------------------- output


def format_comparison(record: dict) -> str:
    """The runs side by side (one column each; beyond :data:`SIDE_BY_SIDE` runs, one row each), then the config
    differences in the same run order."""
    runs, metric = record["runs"], record["metric"]
    keys = list(dict.fromkeys([metric, *KEY_METRICS]))
    quantities = [("path", lambda r: r["path"]),
                  ("state", lambda r: "; ".join([r["state"]] + [p for p in r["problems"] if p != r["state"]])),
                  ("method", lambda r: r["method"]), ("model", lambda r: r["model"]), ("teacher", lambda r: r["teacher"]),
                  ("epoch", lambda r: f"{_text(r['epoch'])}/{_text(r['epochs'])}")]
    quantities += [(f"final {key}", lambda r, key=key: _metric(r["final"], key)) for key in keys]
    quantities += [("best epoch", lambda r: f"{r['best']['epoch']} (by {r['best']['by']})" if r["best"] else "-")]
    quantities += [(f"best {key}", lambda r, key=key: _metric(r["best"], key)) for key in keys]
    quantities += [("wall", lambda r: format_seconds(r["wall_seconds"]))]
    if len(runs) <= SIDE_BY_SIDE:
        grid = [["", *(r["label"] for r in runs)]] + [[name, *(_text(get(r)) for r in runs)] for name, get in quantities]
    else:
        grid = [["run", *(name for name, _ in quantities)]] + [[r["label"], *(_text(get(r)) for _, get in quantities)]
                                                               for r in runs]
    widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in grid]
    differences = record["config_differences"]
    lines.append("")
    if not differences:
        lines.append("config differences: none (the recipes are the same)")
    else:
        lines.append(f"config differences ({len(differences)} key{'s' * (len(differences) != 1)}; "
                     f"{' | '.join(r['label'] for r in runs)}):")
        for item in differences:
            values = ["-" if absent else "?" if value is None and _unreadable(run) else format_value(value)
                      for value, absent, run in zip(item["values"], item["absent"], runs)]
            lines.append(f"  {item['key']}: {' | '.join(values)}")
    return "\n".join(lines)


def _unreadable(run: dict) -> bool:
    return any("config.yaml" in problem for problem in run["problems"]) or run["state"] == "not started"


def _metric(block: dict | None, key: str) -> str:
    value = (block or {}).get(key)
    return "-" if value is None else f"{value:.4f}"


def _text(value) -> str:
    return "-" if value is None else str(value)


def plot_curves(comparison: Comparison, path: str | Path) -> Path:
    """The runs' train_loss, val_acc and test_acc (and the compared metric) per epoch, one line per run, as a PNG
    at ``path``."""
    from kdlab.analysis import plots

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise KdlabError(f"runs compare --plot: {path} must be a .png file")
    histories = {label: history for label, history in comparison.histories.items() if history}
    if not histories:
        raise KdlabError("runs compare --plot: none of the runs has per-epoch metrics (metrics.jsonl) to plot")
    keys = list(dict.fromkeys([*CURVES, comparison.record["metric"]]))
    try:
        return plots.training_curves(histories, path, keys)
    except ValueError as error:  # no run has a number for any of the keys
        raise KdlabError(f"runs compare --plot: {error}") from None
    except OSError as error:
        raise KdlabError(f"runs compare --plot: cannot write {path} ({error.strerror or error})") from None
