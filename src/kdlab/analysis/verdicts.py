"""The verdict rule of the claims report (v2, issue 24; docs/claims_rule_v2.md): how a claim's sub-claims are read
from per-seed results.

Every sub-claim (a ``check`` of the claims file) is one pre-declared primary contrast with a margin ``delta`` in the
metric's units, tied to the published effect. It is evaluated in each (dataset, model) of the claim's studies that
has its groups, a *cell*; runs are paired by seed and the paired differences are signed so that the claimed
direction is positive (``higher``: a − than; ``lower``: than − a; ``not_lower``: a − than; ``not_higher``:
than − a). :func:`kdlab.analysis.decisions.decide` gives each one of four marks, Holm-adjusted across the claim's
sub-claims in the cell: ``+`` (shown on the claimed side), ``-`` (shown on the other side), ``=`` (shown within
±delta, TOST), ``not detectable`` (none; the smallest effect detectable at 80% power is printed beside it). A mark
*reads* as:

* ``higher`` / ``lower`` (an effect of at least delta is claimed): ``+`` holds; ``-`` and ``=`` fail;
* ``not_lower`` / ``not_higher`` (a reaches than, within delta): ``+`` and ``=`` hold; ``-`` fails;
* ``approaches`` (KL approaches MSE as tau grows): the gaps of the first and last group to the target enter the
  family; it holds when the first gap is shown (``+`` or ``-``) and the last is shown within ±delta, fails when the
  last is still shown, and is not detectable otherwise;
* ``transfer`` (a sweep family ``<family>-...``; per model, the setting with the best mean validation accuracy): on
  every other model the regret = test accuracy of that setting there − that model's own best. ``transfers`` reads
  the regret like ``not_lower`` (a coinciding best setting holds); ``model_dependent`` reads the cost (−regret) like
  ``higher`` (a coinciding best setting fails). The family is one dataset's pairs.

**The teacher gate.** A claim names its teachers and the students each one teaches (``teachers``); the claims file
names the gap and the groups trained without a teacher (``teacher_gate: {gap, against}``). Where a teacher's mean
test accuracy is not at least ``gap`` above every ``against`` group of the cell, the sub-claims that use its
students are *untestable* there (no mark, outside the family and the verdict).

The verdict of a claim, from the readings of all its tested cells: **not detectable here** when fewer than half
are decided (hold or fail); otherwise **supported** when none fails, **not supported** when none holds, **mixed**
when some hold and some fail; **untestable here** when none could be tested. A claim's ``context`` comparisons are read the
same way, in a family of their own, shown in brackets outside the verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from kdlab.analysis import stats
from kdlab.analysis.decisions import Decision, decide
from kdlab.analysis.runs import RunEntry

DIRECTIONS = {"higher": (1, "effect"), "lower": (-1, "effect"), "not_lower": (1, "reach"), "not_higher": (-1, "reach")}
READINGS = {"effect": {"+": "holds", "-": "fails", "=": "fails"}, "reach": {"+": "holds", "=": "holds", "-": "fails"}}


@dataclass
class Cell:
    """One sub-claim in one (dataset, model): its mark, what the mark means for the claim, and the numbers."""

    dataset: str
    model: str
    check: str
    mark: str
    reading: str
    detail: str
    published: str = ""
    numbers: dict = field(default_factory=dict)
    source: int = -1  # the position of its check in the claim's list


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


def cells_of(groups: dict[tuple, list[RunEntry]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(key[:2] for key in groups))


def paired_differences(a: list[RunEntry], b: list[RunEntry], metric_a: str, metric_b: str) -> list[float]:
    """a − b per seed both have (finite values only), in a's seed order."""
    by_seed = {e.seed: e for e in b}
    pairs = [(metric_value(e, metric_a), metric_value(by_seed[e.seed], metric_b)) for e in a if e.seed in by_seed]
    return [x - y for x, y in pairs if math.isfinite(x) and math.isfinite(y)]


def paired(a: list[RunEntry], b: list[RunEntry], metric_a: str, metric_b: str) -> dict | None:
    """The paired summary of a − b (mean, std, 95% interval, p, n), or None with fewer than two pairs."""
    diffs = paired_differences(a, b, metric_a, metric_b)
    return stats.paired_difference(diffs, [0.0] * len(diffs)) if len(diffs) >= 2 else None


# ---------------------------------------------------------------------------------------------------- sub-claims


@dataclass
class _SubClaim:
    """One contrast of one cell before the family is decided: its signed differences and how to read its mark."""

    label: str
    differences: list[float]
    delta: float
    kind: str  # effect, reach or the name of an approaches check's half
    published: str
    source: int


def check_label(check: dict) -> str:
    if "approaches" in check:
        return f"{' → '.join(check['groups'])} approach {check['approaches']}, {check['metric']}"
    metric_b = check["metric"]
    metric_a = check.get("a_metric", metric_b)
    return (f"{check['a']}{'' if metric_a == metric_b else f' ({metric_a})'} {check['expect'].replace('_', ' ')} "
            f"than {check['than']}{'' if metric_a == metric_b else f' ({metric_b})'}, {metric_b}")


def _contrasts(check: dict, source: int, groups: dict, dataset: str, model: str) -> list[_SubClaim]:
    """The signed contrasts of ``check`` in one cell (none when a group is missing or fewer than 2 seeds pair)."""
    get = lambda name: groups.get((dataset, model, name))
    delta, published = float(check["delta"]), str(check.get("published", ""))
    if "approaches" in check:
        target, first, last = get(check["approaches"]), get(check["groups"][0]), get(check["groups"][-1])
        if not (target and first and last):
            return []
        metric = check["metric"]
        result = [_SubClaim(f"{check_label(check)}: gap at {name}", paired_differences(members, target, metric, metric),
                            delta, half, published, source) for name, members, half in
                  ((check["groups"][0], first, "first"), (check["groups"][-1], last, "last"))]
        return result if all(len(s.differences) >= 2 for s in result) else []
    a, b = get(check["a"]), get(check["than"])
    if not a or not b:
        return []
    sign, kind = DIRECTIONS[check["expect"]]
    diffs = [sign * d for d in paired_differences(a, b, check.get("a_metric", check["metric"]), check["metric"])]
    return [_SubClaim(check_label(check), diffs, delta, kind, published, source)] if len(diffs) >= 2 else []


def _detail(decision: Decision) -> str:
    return (f"Δ {decision.mean:+.4f} [{decision.ci_low:+.4f}, {decision.ci_high:+.4f}], n {decision.n}, "
            f"δ {decision.delta:g}, p (Holm) {decision.p_adjusted:.3f}, detectable at 80% power: {decision.mde:.4f}")


def _numbers(decision: Decision) -> dict:
    return {"mean": decision.mean, "ci_low": decision.ci_low, "ci_high": decision.ci_high, "n": decision.n,
            "delta": decision.delta, "p_adjusted": decision.p_adjusted, "mde": decision.mde}


def _mark_text(decision: Decision) -> str:
    return f"not detectable (MDE {decision.mde:.4f})" if decision.mark == "not detectable" else decision.mark


def _family_cells(dataset: str, model: str, subclaims: list[_SubClaim]) -> list[Cell]:
    """Decide one family (Holm across it) and read every mark; an approaches check's two halves become one cell."""
    if not subclaims:
        return []
    decisions = decide({str(i): s.differences for i, s in enumerate(subclaims)},
                       {str(i): s.delta for i, s in enumerate(subclaims)})
    cells, pending_first = [], None
    for i, sub in enumerate(subclaims):
        decision = decisions[str(i)]
        if sub.kind == "first":
            pending_first = decision
            continue
        if sub.kind == "last":
            first = pending_first
            shown = lambda d: d.mark in ("+", "-")
            reading = ("fails" if shown(decision) else "holds" if shown(first) and decision.mark == "=" else
                       "not detectable")
            mark = {"holds": "+", "fails": "-", "not detectable": "not detectable"}[reading]
            label = sub.label.rsplit(": gap at ", 1)[0]
            detail = f"first gap: {_mark_text(first)}, {_detail(first)}; last gap: {_mark_text(decision)}, {_detail(decision)}"
            cells.append(Cell(dataset, model, label, mark, reading, detail, sub.published,
                              {"first": _numbers(first), "last": _numbers(decision)}, sub.source))
            continue
        reading = READINGS[sub.kind].get(decision.mark, "not detectable")
        cells.append(Cell(dataset, model, sub.label, _mark_text(decision), reading, _detail(decision), sub.published,
                          _numbers(decision), sub.source))
    return cells


# ---------------------------------------------------------------------------------------------------- the gate


def teacher_gate(claim: dict, gate: dict | None, groups: dict, dataset: str, model: str) -> dict[str, str]:
    """The teachers of ``claim`` that fail the gate in this cell: teacher group -> why (empty when all pass)."""
    failed = {}
    if not gate:
        return failed
    against = [groups[(dataset, model, g)] for g in gate.get("against", []) if (dataset, model, g) in groups]
    students = [float(np.mean([metric_value(e, "acc") for e in members])) for members in against]
    for teacher in claim.get("teachers", {}):
        members = next((m for (d, _, g), m in groups.items() if d == dataset and g == teacher), None)
        if not members:
            failed[teacher] = "not run"
            continue
        accuracy = float(np.mean([metric_value(e, "acc") for e in members]))
        if students and accuracy - max(students) < gate["gap"]:
            failed[teacher] = (f"{teacher} {accuracy:.4f} is {100 * (accuracy - max(students)):+.2f} points from the "
                               f"best student trained without it ({max(students):.4f}; gate {100 * gate['gap']:g})")
    return failed


def _taught_by(claim: dict, teachers: dict[str, str]) -> dict[str, str]:
    return {student: why for teacher, why in teachers.items() for student in claim.get("teachers", {})[teacher]}


def _groups_of(check: dict) -> list[str]:
    return [*check["groups"], check["approaches"]] if "approaches" in check else [check["a"], check["than"]]


# ---------------------------------------------------------------------------------------------------- evaluation


def evaluate_claim(claim: dict, groups: dict[tuple, list[RunEntry]], gate: dict | None = None,
                   which: str = "checks") -> list[Cell]:
    """Every cell of the claim's ``checks`` (or its ``context``), each (dataset, model) one Holm family."""
    checks = list(enumerate(claim.get(which, [])))
    transfers = [(i, c) for i, c in checks if "transfer" in c]
    cells = evaluate_transfers(transfers, groups) if transfers else []
    pairwise = [(i, c) for i, c in checks if "transfer" not in c]
    for dataset, model in cells_of(groups):
        untestable = _taught_by(claim, teacher_gate(claim, gate, groups, dataset, model))
        family: list[_SubClaim] = []
        for source, check in pairwise:
            blocked = next((untestable[g] for g in _groups_of(check) if g in untestable), None)
            contrasts = _contrasts(check, source, groups, dataset, model)
            if blocked and contrasts:
                cells.append(Cell(dataset, model, check_label(check), "untestable", "untestable", blocked,
                                  str(check.get("published", "")), source=source))
            else:
                family += contrasts
        cells += _family_cells(dataset, model, family)
    return cells


def evaluate_transfers(checks: list[tuple[int, dict]], groups: dict[tuple, list[RunEntry]]) -> list[Cell]:
    """The transfer checks (each with its position in the claim), one Holm family per dataset."""
    cells = []
    for dataset in dict.fromkeys(key[0] for key in groups):
        family: list[tuple[str, _SubClaim | None, str, dict, int]] = []
        for position, check in checks:
            settings: dict[str, dict[str, list[RunEntry]]] = {}
            for (d, model, group), members in groups.items():
                if d == dataset and group.startswith(f"{check['transfer']}-"):
                    settings.setdefault(model, {})[group] = members
            best = {model: max(options, key=lambda g: float(np.mean([metric_value(e, "val_acc") for e in options[g]])))
                    for model, options in settings.items()}
            for source in settings:
                for target in settings:
                    if source == target or best[source] not in settings[target]:
                        continue
                    label = f"{check['transfer']}: the best setting on {source} used on {target} ({check['expect']})"
                    note = f"best on {source}: {best[source]}; best on {target}: {best[target]}"
                    regret = ([] if best[source] == best[target] else
                              paired_differences(settings[target][best[source]], settings[target][best[target]],
                                                 "acc", "acc"))
                    sign, kind = (1, "reach") if check["expect"] == "transfers" else (-1, "effect")
                    sub = (_SubClaim(label, [sign * r for r in regret], float(check["delta"]), kind,
                                     str(check.get("published", "")), position) if len(regret) >= 2 else None)
                    family.append((target, sub, note, check, position))
        decided_iter = iter(_family_cells(dataset, "", [entry[1] for entry in family if entry[1] is not None]))
        for target, sub, note, check, position in family:
            if sub is None:  # the same best setting on both models
                same = check["expect"] == "transfers"
                cells.append(Cell(dataset, target, f"{check['transfer']}: the best setting used on {target} "
                                  f"({check['expect']})", "same setting", "holds" if same else "fails", note,
                                  str(check.get("published", "")), source=position))
                continue
            cell = next(decided_iter)
            cells.append(Cell(dataset, target, cell.check, cell.mark, cell.reading, f"{note}; {cell.detail}",
                              cell.published, cell.numbers, position))
    return cells


def claim_verdict(cells: list[Cell]) -> str:
    if not cells:
        return "no data"
    tested = [c for c in cells if c.reading != "untestable"]
    if not tested:
        return "untestable here"
    holds, fails = sum(c.reading == "holds" for c in tested), sum(c.reading == "fails" for c in tested)
    if (holds + fails) * 2 < len(tested):
        return "not detectable here"
    if fails == 0:
        return "supported"
    return "not supported" if holds == 0 else "mixed"


def diff_text(diff: dict) -> str:
    p = diff.get("p_value", math.nan)
    return (f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"
            + (f", p {p:.3f}" if math.isfinite(p) else "") + f", n {diff['n']}")
