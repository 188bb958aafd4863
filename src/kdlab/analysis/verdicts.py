"""The verdict rule of the claims report: how a claim's checks are read from per-seed results.

Every check is evaluated in each (dataset, model) of the claim's studies that has its groups, a *cell*; runs are
paired by seed, and intervals are 95% Student-t intervals over the pairs (:func:`kdlab.analysis.stats.paired_difference`):

* ``higher`` / ``lower``: the difference a − than is "+" when its interval lies on the claimed side of 0, "−" when
  it lies on the other side, "0" otherwise;
* ``not_higher`` / ``not_lower`` (a reaches than, within an optional ``margin`` m >= 0 in the metric's units,
  default 0): for ``not_lower``, "+" when the interval's lower end is at or above −m (a is shown to be at most m
  below than), "−" when it is not and the interval lies wholly below 0, "0" otherwise (too wide to tell);
  ``not_higher`` mirrors it. A non-inferiority reading: a wide interval is undecided, not a success;
* ``approaches``: the absolute mean difference between each group and the target, in the order given: "+" when it
  never grows along the order and the last group's interval contains 0, "−" when the last is farther from the
  target than the first, "0" otherwise;
* ``transfer`` (a sweep family: groups named ``<family>-...``): per model, the setting with the best mean
  validation accuracy; on every other model, the regret = test accuracy of that setting there − test accuracy of
  that model's own best setting, with an optional ``margin`` m (default 0). ``transfers``: "+" when the two
  settings coincide or the regret's interval lies at or above −m, "−" when it does not and lies wholly below 0,
  "0" otherwise. ``model_dependent``: "+" when the settings differ and the regret's interval lies wholly below −m,
  "−" when they coincide or the interval lies at or above −m, "0" otherwise.

The verdict of a claim, from all its cells: **supported** when no cell is "−" and at least half are "+"; **not
supported** when no cell is "+"; **mixed** otherwise. It is computed, never written by hand. A claim's ``context``
comparisons are evaluated the same way and shown beside its checks, marked in brackets, outside the verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from kdlab.analysis import stats
from kdlab.analysis.decisions import minimum_detectable_effect
from kdlab.analysis.runs import RunEntry



@dataclass
class Cell:
    """One check in one (dataset, model): its mark (+, −, 0) and what it was read from."""

    dataset: str
    model: str
    check: str
    mark: str
    detail: str


def metric_value(entry: RunEntry, name: str) -> float:
    """A run's value of metric ``name``: a report metric (acc, nll, ece, ece_ts, agreement, acc@leader, ...), a
    projection spread ratio (spread_test, spread_train), or val_acc (final epoch)."""
    if name.startswith("spread_"):
        split = name.split("_", 1)[1]
        return entry.spread[split]["spread_ratio"] if entry.spread else math.nan
    if name == "val_acc":
        return entry.summary["final"].get("val_acc", math.nan)
    if name == "train_acc":  # on the training labels as trained on (noisy ones, with label noise): last epoch
        lines = (entry.path / "metrics.jsonl").read_text().splitlines() if (entry.path / "metrics.jsonl").is_file() else []
        return json.loads(lines[-1]).get("train_acc", math.nan) if lines else math.nan
    return entry.metrics.get(name, math.nan)


# ---------------------------------------------------------------------------------------------------- checks


def cells_of(groups: dict[tuple, list[RunEntry]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(key[:2] for key in groups))


def paired(a: list[RunEntry], b: list[RunEntry], metric_a: str, metric_b: str) -> dict | None:
    by_seed = {e.seed: e for e in b}
    pairs = [(metric_value(e, metric_a), metric_value(by_seed[e.seed], metric_b)) for e in a if e.seed in by_seed]
    pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 2:
        return None
    return stats.paired_difference([x for x, _ in pairs], [y for _, y in pairs])


def _side(diff: dict) -> int:
    """+1 when the interval lies above 0, −1 below, 0 when it contains 0."""
    return 1 if diff["ci_low"] > 0 else -1 if diff["ci_high"] < 0 else 0


def _reaches(diff: dict, margin: float) -> str:
    """Non-inferiority of a difference (a − than, larger is better): "+" when its interval's lower end is at or
    above −margin, "−" when not and the interval lies wholly below 0, "0" otherwise."""
    if diff["ci_low"] >= -margin:
        return "+"
    return "−" if diff["ci_high"] < 0 else "0"


def _flipped(diff: dict) -> dict:
    return {**diff, "mean": -diff["mean"], "ci_low": -diff["ci_high"], "ci_high": -diff["ci_low"]}


def _margin_text(check: dict) -> str:
    return f" (margin {check['margin']:g})" if check.get("margin") else ""


def evaluate(check: dict, groups: dict[tuple, list[RunEntry]]) -> list[Cell]:
    if "transfer" in check:
        return evaluate_transfer(check, groups)
    if "approaches" in check:
        return evaluate_approaches(check, groups)
    cells = []
    metric_b = check["metric"]
    metric_a = check.get("a_metric", metric_b)
    label = (f"{check['a']}{'' if metric_a == metric_b else f' ({metric_a})'} {check['expect'].replace('_', ' ')} "
             f"than {check['than']}{'' if metric_a == metric_b else f' ({metric_b})'}, {metric_b}"
             f"{_margin_text(check)}")
    for dataset, model in cells_of(groups):
        a, b = groups.get((dataset, model, check["a"])), groups.get((dataset, model, check["than"]))
        if not a or not b:
            continue
        diff = paired(a, b, metric_a, metric_b)
        if diff is None:
            continue
        expect = check["expect"]
        detail = f"Δ {diff_text(diff)}"
        if expect in ("higher", "lower"):
            side, wanted = _side(diff), 1 if expect == "higher" else -1
            mark = "+" if side == wanted else "−" if side == -wanted else "0"
            if mark == "0":  # undecided: say how large an effect these pairs could have shown (80% power)
                detail += f", detectable at 80% power: {minimum_detectable_effect(diff['std'], diff['n']):.4f}"
        else:
            mark = _reaches(diff if expect == "not_lower" else _flipped(diff), check.get("margin", 0))
        cells.append(Cell(dataset, model, label, mark, detail))
    return cells


def evaluate_approaches(check: dict, groups: dict[tuple, list[RunEntry]]) -> list[Cell]:
    cells = []
    metric, target = check["metric"], check["approaches"]
    label = f"{' → '.join(check['groups'])} approach {target}, {metric}"
    for dataset, model in cells_of(groups):
        reference = groups.get((dataset, model, target))
        members = [groups.get((dataset, model, g)) for g in check["groups"]]
        if not reference or not all(members):
            continue
        diffs = [paired(m, reference, metric, metric) for m in members]
        if any(d is None for d in diffs):
            continue
        gaps = [abs(d["mean"]) for d in diffs]
        monotone = all(later <= earlier + 1e-12 for earlier, later in zip(gaps, gaps[1:]))
        if monotone and _side(diffs[-1]) == 0:
            mark = "+"
        elif gaps[-1] > gaps[0]:
            mark = "−"
        else:
            mark = "0"
        detail = "; ".join(f"{g}: Δ {diff_text(d)}" for g, d in zip(check["groups"], diffs))
        cells.append(Cell(dataset, model, label, mark, detail))
    return cells


def evaluate_transfer(check: dict, groups: dict[tuple, list[RunEntry]]) -> list[Cell]:
    family, expect, margin = check["transfer"], check["expect"], check.get("margin", 0)
    cells = []
    for dataset in dict.fromkeys(key[0] for key in groups):
        settings: dict[str, dict[str, list[RunEntry]]] = {}
        for (d, model, group), members in groups.items():
            if d == dataset and group.startswith(f"{family}-"):
                settings.setdefault(model, {})[group] = members
        best = {model: max(options, key=lambda g: stats.summarize([metric_value(e, "val_acc")
                                                                   for e in options[g]])["mean"])
                for model, options in settings.items()}
        for source in settings:
            for target in settings:
                if source == target or best[source] not in settings[target]:
                    continue
                label = f"{family}: the best setting on {source} used on {target}{_margin_text(check)}"
                same = best[source] == best[target]
                diff = None if same else paired(settings[target][best[source]], settings[target][best[target]],
                                                 "acc", "acc")
                if diff is None:  # the same setting (or too few paired seeds to tell)
                    mark = "0" if not same else "+" if expect == "transfers" else "−"
                elif expect == "transfers":
                    mark = _reaches(diff, margin)
                else:
                    mark = "+" if diff["ci_high"] < -margin else "−" if diff["ci_low"] >= -margin else "0"
                detail = (f"best on {source}: {best[source]}; best on {target}: {best[target]}"
                          + ("" if diff is None else f"; regret on {target}: {diff_text(diff)}"))
                cells.append(Cell(dataset, target, label, mark, detail))
    return cells


def claim_verdict(cells: list[Cell]) -> str:
    if not cells:
        return "no data"
    plus, minus = sum(c.mark == "+" for c in cells), sum(c.mark == "−" for c in cells)
    if minus == 0 and plus * 2 >= len(cells):
        return "supported"
    if plus == 0:
        return "not supported"
    return "mixed"


def diff_text(diff: dict) -> str:
    p = diff.get("p_value", math.nan)
    return (f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"
            + (f", p {p:.3f}" if math.isfinite(p) else "") + f", n {diff['n']}")
