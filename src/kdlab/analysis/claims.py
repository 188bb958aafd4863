"""Claims: ``kdlab report --claims studies/claims.yaml --out reports`` writes ``reports/claims.md``: for each claim of
the seed papers, the numbers of the studies that test it and a verdict read from them by a fixed rule.

The claims file (YAML)::

    results: ../results          # the studies' archives (kdlab archive), relative to the claims file
    commands: |                  # how to regenerate every number: printed at the top of the report
      kdlab study ...
    datasets:                    # a note per dataset folder of results: its setting, why its schedule suffices
      fsdd: "..."
    schedule:                    # optional: is each dataset's schedule long enough? (no verdict, a measurement)
      studies: [fsdd/offline, fsdd/schedule]
      short: ce                  # the baseline at the profile's schedule
      long: ce_x3                # the same, trained longer (same seeds)
      tolerance: 0.03            # "within a few points": the long schedule's mean gain at most this
      note: "..."
    claims:
      - id: 1
        title: LSR-OS improves on LSR ...
        source: Wang et al. 2021 (docs/methods/lsr_os_tc.md §1)
        studies: [fsdd/offline, fashion_mnist/offline]
        groups: [ce, ls, lsr_os, lsr_os_tc]      # rows of its tables (default: the groups its checks name)
        metrics: [acc, nll, ece, ece_ts]         # columns (this is the default)
        plots: [reliability, curves]             # any of reliability, projection, curves (default none)
        checks:
          - {a: lsr_os, than: ls, metric: acc, expect: higher}
          - {a: ce, a_metric: ece_ts, than: ls, metric: ece, expect: not_higher, margin: 0.01}
          - {approaches: kd_mse, groups: [kd_t1, kd_t4, kd_t20], metric: acc}
          - {transfer: lsr_os_tc, expect: transfers, margin: 0.01}   # or: model_dependent
        context:                                 # comparisons shown beside the checks, outside the verdict
          - {a: ls, than: ce, metric: acc, expect: higher}    # (e.g. where a claim's condition holds)

The checks and the verdict are read by the rule in :mod:`kdlab.analysis.verdicts` (its docstring states it).
"""

from __future__ import annotations

import math
from pathlib import Path

from kdlab.analysis import stats
from kdlab.config import read_yaml
from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json, atomic_write_text
from kdlab.analysis.report import fmt, load_groups, plot_groups
from kdlab.analysis.runs import RunEntry, provenance
from kdlab.analysis.verdicts import Cell, cells_of, claim_verdict, diff_text, evaluate_claim, metric_value, paired

DEFAULT_METRICS = ("acc", "nll", "ece", "ece_ts")
EXPECTATIONS = ("higher", "lower", "not_higher", "not_lower")
TRANSFER_EXPECTATIONS = ("transfers", "model_dependent")
PLOTS = ("reliability", "projection", "curves")
METRIC_NAMES = {"acc": "test acc", "nll": "NLL", "ece": "ECE", "ece_ts": "ECE after TS", "brier": "Brier",
                "spread_test": "spread ratio (test)", "spread_train": "spread ratio (train)", "temperature": "T",
                "agreement": "agreement with teacher", "fidelity_kl": "KL(teacher ‖ student)", "val_acc": "val acc",
                "train_acc": "train acc (last epoch)"}


def build_claims_report(claims_file: str | Path, out: str | Path) -> dict:
    """Read the claims file, evaluate every claim on its studies' archives, write ``out/claims.md``,
    ``out/claims.json`` and the plots in ``out/claims/``; return the record."""
    claims_file = Path(claims_file)
    spec = read_yaml(claims_file)
    claims = _validated(claims_file, spec)
    results = (claims_file.parent / spec.get("results", ".")).resolve()
    loaded: dict[tuple[str, bool], tuple] = {}

    def study(name: str, spreads: bool):
        if (name, spreads) not in loaded:
            entries, groups, _, class_ids, class_names = load_groups([results / name], spreads=spreads)
            loaded[(name, spreads)] = (entries, groups, class_ids, class_names)
        return loaded[(name, spreads)]

    out = Path(out)
    schedule = _schedule_section(spec["schedule"], results, study) if spec.get("schedule") else ""
    images_dir = out / "claims"
    images_dir.mkdir(parents=True, exist_ok=True)
    record = {"claims": []}
    sections = []
    for claim in claims:
        spreads = "projection" in claim["plots"] or any(m.startswith("spread_") for m in _metrics_used(claim))
        groups: dict[tuple, list[RunEntry]] = {}
        class_ids, class_names = [], []
        archived, pending = _by_archive(results, claim["studies"])
        for name in archived:
            _, study_groups, class_ids, class_names = study(name, spreads)
            groups.update({key: members for key, members in study_groups.items() if key[2] in claim["groups"]
                           or any(key[2].startswith(f"{family}-") for family in _families(claim))})
            # the teachers after their students, each study's in turn
            groups.update({key: members for key, members in study_groups.items() if key[2] in claim["teachers"]})
        cells = evaluate_claim(claim, groups, spec.get("teacher_gate"), "checks")
        context = evaluate_claim(claim, groups, spec.get("teacher_gate"), "context")
        verdict = claim_verdict(cells)
        silent = set(range(len(claim["checks"]))) - {cell.source for cell in cells}  # no cell could read them yet
        if silent and cells:
            verdict += f" so far ({len(silent)} of {len(claim['checks'])} sub-claims have no data yet)"
        images = plot_groups({k: v for k, v in groups.items() if k[2] in claim["groups"]}, images_dir, class_ids,
                             class_names, prefix=f"claim{claim['id']}_", which=tuple(claim["plots"])) \
            if claim["plots"] else {}
        record["claims"].append({"id": claim["id"], "title": claim["title"], "verdict": verdict,
                                 "cells": [vars(c) for c in cells], "context": [vars(c) for c in context],
                                 "studies": claim["studies"], "pending": pending})
        sections.append(_section(claim, groups, cells, verdict, images, pending, context))
    runs = {entry.path: entry.summary for entries, *_ in loaded.values() for entry in entries}
    where = provenance(list(runs.values()))
    atomic_write_json(out / "claims.json", record)
    atomic_write_text(out / "claims.md", _markdown(spec, claims_file, record, [schedule, *sections], where))
    return record


# ---------------------------------------------------------------------------------------------------- the spec


def _validated(where: Path, spec: dict) -> list[dict]:
    unknown = set(spec) - {"results", "commands", "datasets", "schedule", "claims", "title", "introduction",
                           "teacher_gate"}
    if unknown:
        raise KdlabError(f"{where}: unknown key '{sorted(unknown)[0]}'")
    if "teacher_gate" in spec:
        _check_gate_spec(where, spec["teacher_gate"])
    if "schedule" in spec:
        _check_schedule_spec(where, spec["schedule"])
    claims = spec.get("claims")
    if not isinstance(claims, list) or not claims:
        raise KdlabError(f"{where}: 'claims' must be a non-empty list")
    result = []
    for i, claim in enumerate(claims):
        at = f"{where}: claims[{i}]"
        if not isinstance(claim, dict):
            raise KdlabError(f"{at} must be a mapping")
        extra = set(claim) - {"id", "title", "source", "studies", "groups", "metrics", "plots", "checks", "note",
                              "context", "teachers"}
        if extra:
            raise KdlabError(f"{at}: unknown key '{sorted(extra)[0]}'")
        for key in ("id", "title", "studies", "checks"):
            if key not in claim:
                raise KdlabError(f"{at}: '{key}' is missing")
        if not isinstance(claim["studies"], list) or not claim["studies"]:
            raise KdlabError(f"{at}: 'studies' must be a non-empty list of result folders")
        if not isinstance(claim["checks"], list) or not claim["checks"]:
            raise KdlabError(f"{at}: 'checks' must be a non-empty list")
        context = claim.get("context", [])
        if not isinstance(context, list):
            raise KdlabError(f"{at}: 'context' must be a list of checks")
        for check in [*claim["checks"], *context]:
            _check_spec(at, check)
        plots = claim.get("plots", [])
        if any(p not in PLOTS for p in plots):
            raise KdlabError(f"{at}: plots are among {', '.join(PLOTS)}")
        teachers = claim.get("teachers", {})
        if not isinstance(teachers, dict) or not all(isinstance(v, list) for v in teachers.values()):
            raise KdlabError(f"{at}: 'teachers' maps each teacher group to the list of groups it teaches")
        named = [g for check in [*claim["checks"], *context] for g in _groups_named(check)]
        result.append({**claim, "plots": plots, "context": context, "teachers": teachers,
                       "metrics": claim.get("metrics", list(DEFAULT_METRICS)),
                       "groups": claim.get("groups") or list(dict.fromkeys(named)), "source": claim.get("source", "")})
    return result


def _check_schedule_spec(where: Path, schedule) -> None:
    at = f"{where}: schedule"
    if not isinstance(schedule, dict):
        raise KdlabError(f"{at} must be a mapping")
    extra = set(schedule) - {"studies", "short", "long", "tolerance", "note"}
    if extra:
        raise KdlabError(f"{at}: unknown key '{sorted(extra)[0]}'")
    for key in ("studies", "short", "long"):
        if key not in schedule:
            raise KdlabError(f"{at}: '{key}' is missing")
    if not isinstance(schedule["studies"], list) or not schedule["studies"]:
        raise KdlabError(f"{at}: 'studies' must be a non-empty list of result folders")
    tolerance = schedule.get("tolerance", 0.03)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise KdlabError(f"{at}: tolerance is an accuracy gap in [0, 1), got {tolerance!r}")


def _check_gate_spec(where: Path, gate) -> None:
    at = f"{where}: teacher_gate"
    if not isinstance(gate, dict) or set(gate) - {"gap", "against"} or "gap" not in gate:
        raise KdlabError(f"{at} is a mapping with gap (and against: the groups trained without a teacher)")
    gap = gate["gap"]
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 <= gap < 1:
        raise KdlabError(f"{at}: gap is an accuracy difference in [0, 1), got {gap!r}")
    if not isinstance(gate.get("against", []), list):
        raise KdlabError(f"{at}: against is a list of groups")


def _check_spec(at: str, check) -> None:
    if not isinstance(check, dict):
        raise KdlabError(f"{at}: a check must be a mapping")
    if "margin" in check:
        raise KdlabError(f"{at}: 'margin' was the v1 rule's; give each sub-claim its delta (docs/claims_rule_v2.md)")
    unknown = set(check) - {"a", "a_metric", "than", "metric", "expect", "delta", "published", "approaches", "groups",
                            "transfer"}
    if unknown:
        raise KdlabError(f"{at}: unknown check key '{sorted(unknown)[0]}'")
    if "transfer" in check:
        if check.get("expect") not in TRANSFER_EXPECTATIONS:
            raise KdlabError(f"{at}: a transfer check expects {' or '.join(TRANSFER_EXPECTATIONS)}")
    elif "approaches" in check:
        if not isinstance(check.get("groups"), list) or len(check["groups"]) < 2 or "metric" not in check:
            raise KdlabError(f"{at}: an approaches check needs groups (two or more, in order) and a metric")
    else:
        missing = [k for k in ("a", "than", "metric", "expect") if k not in check]
        if missing:
            raise KdlabError(f"{at}: a comparison needs a, than, metric and expect ('{missing[0]}' is missing)")
        if check["expect"] not in EXPECTATIONS:
            raise KdlabError(f"{at}: expect is one of {', '.join(EXPECTATIONS)}, got {check['expect']!r}")
    delta = check.get("delta")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise KdlabError(f"{at}: every check needs its delta, a difference in the metric's units in (0, 1), "
                         f"got {delta!r}")


def _groups_named(check: dict) -> list[str]:
    if "transfer" in check:
        return []
    if "approaches" in check:
        return [*check["groups"], check["approaches"]]
    return [check["a"], check["than"]]


def _by_archive(results: Path, studies: list[str]) -> tuple[list[str], list[str]]:
    """The studies (result folders) split into those archived and those with no archive yet, in their order."""
    archived = [name for name in studies if (results / name / "study.json").is_file()]
    return archived, [name for name in studies if name not in archived]


def _not_run_yet(pending: list[str]) -> str:
    return f" Not run yet: {', '.join(f'`{s}`' for s in pending)}." if pending else ""


def _families(claim: dict) -> list[str]:
    return [check["transfer"] for check in [*claim["checks"], *claim.get("context", [])] if "transfer" in check]


def _metrics_used(claim: dict) -> list[str]:
    used = list(claim["metrics"])
    for check in [*claim["checks"], *claim["context"]]:
        used += [check.get("metric", "acc"), check.get("a_metric", check.get("metric", "acc"))]
    return used


# ---------------------------------------------------------------------------------------------------- markdown


def _counts(cells: list[Cell]) -> dict[str, int]:
    return {reading: sum(c.reading == reading for c in cells)
            for reading in ("holds", "fails", "not detectable", "untestable")}


def _section(claim: dict, groups: dict[tuple, list[RunEntry]], cells: list[Cell], verdict: str, images: dict,
             pending: list[str], context: list[Cell]) -> str:
    counts = _counts(cells)
    lines = [f"## Claim {claim['id']}: {claim['title']}", ""]
    if claim["source"]:
        lines += [f"Source: {claim['source']}. Studies: {', '.join(f'`{s}`' for s in claim['studies'])}.", ""]
    lines += [f"**Verdict: {verdict} on this data** ({len(cells)} sub-claims in all cells: {counts['holds']} hold, "
              f"{counts['fails']} fail, {counts['not detectable']} not detectable, {counts['untestable']} "
              f"untestable by the teacher gate)." + _not_run_yet(pending), ""]
    if claim.get("note"):
        lines += [claim["note"].strip(), ""]
    metrics = claim["metrics"]
    header = ["dataset", "model", "group", "seeds", *[METRIC_NAMES.get(m, m) for m in metrics]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, members in groups.items():
        if (key[2] not in claim["groups"] and key[2] not in claim["teachers"]
                and not any(key[2].startswith(f"{f}-") for f in _families(claim))):
            continue
        values = [stats.summarize([metric_value(e, m) for e in members]) if all(
            math.isfinite(metric_value(e, m)) for e in members) else None for m in metrics]
        role = " (teacher)" if key[2] in claim["teachers"] else ""
        row = [key[0], key[1], key[2] + role, str(len(members))]
        row += [fmt(v, 4 if not m.startswith("spread") else 3, ci=(m == "acc")) for m, v in zip(metrics, values)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| dataset | model | sub-claim | published effect | mark | reads | numbers (Δ signed: + is the claimed "
              "direction) |",
              "|---|---|---|---|---|---|---|"]
    for cell in cells:
        lines.append(f"| {cell.dataset} | {cell.model} | {cell.check} | {cell.published} | {cell.mark} | "
                     f"{cell.reading} | {cell.detail} |")
    for cell in context:  # shown in brackets: read beside the checks, not counted in the verdict
        lines.append(f"| {cell.dataset} | {cell.model} | context: {cell.check} | {cell.published} | ({cell.mark}) | "
                     f"({cell.reading}) | {cell.detail} |")
    titles = {"reliability": "Reliability diagrams (first seed)", "reliability_ts": "After temperature scaling",
              "projection": "Penultimate-layer projections (first seed)", "curves": "Training curves"}
    for name, file in images.items():
        lines += ["", f"{titles[name]}:", "", f"![claim {claim['id']} {name}](claims/{file})"]
    lines.append("")
    return "\n".join(lines)


def _schedule_section(schedule: dict, results: Path, study) -> str:
    """Is the schedule long enough? Per (dataset, model): the short and long baselines' accuracy and the long one's
    gain, paired by seed, against the tolerance (a measurement, not a verdict)."""
    short, long, tolerance = schedule["short"], schedule["long"], float(schedule.get("tolerance", 0.03))
    archived, pending = _by_archive(results, schedule["studies"])
    groups: dict[tuple, list[RunEntry]] = {}
    for name in archived:
        groups.update({k: v for k, v in study(name, False)[1].items() if k[2] in (short, long)})
    lines = ["## Is the schedule long enough?", "",
             f"`{long}` trains the baseline `{short}` longer, with the same seeds; its gain in test accuracy (paired "
             f"by seed) says how far the schedule of the claims is from convergence. A mean gain of at most "
             f"{tolerance:.2f} ({tolerance * 100:g} points) counts as near."
             + _not_run_yet(pending), ""]
    if schedule.get("note"):
        lines += [str(schedule["note"]).strip(), ""]
    lines += ["| dataset | model | epochs | test acc | val acc | epochs (long) | test acc (long) | val acc (long) "
              "| gain (long − short) | within |", "|" + "---|" * 10]
    for dataset, model in cells_of(groups):
        a, b = groups.get((dataset, model, long)), groups.get((dataset, model, short))
        if not b:
            continue
        diff = paired(a, b, "acc", "acc") if a else None
        row = [dataset, model]
        for members in (b, a):
            if not members:
                row += ["not run yet", "", ""]
                continue
            epochs = sorted({m.summary["final"].get("epoch") for m in members} - {None})
            row += [", ".join(map(str, epochs)) or "?"]
            row += [fmt(stats.summarize([metric_value(e, m) for e in members]), 4, ci=(m == "acc"))
                    for m in ("acc", "val_acc")]
        row += [diff_text(diff) if diff else "n/a",
                "n/a" if diff is None else "yes" if diff["mean"] <= tolerance else "no"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return "\n".join(lines)


def _markdown(spec: dict, claims_file: Path, record: dict, sections: list[str], where: str) -> str:
    lines = [f"# {spec.get('title', 'The seed papers’ claims, tested')}", ""]
    if spec.get("introduction"):
        lines += [spec["introduction"].strip(), ""]
    lines += ["| claim | verdict | sub-claims decided (+, − or =) of those tested |", "|---|---|---|"]
    decided = tested = 0
    for claim in record["claims"]:
        cells = [c for c in claim["cells"] if c["reading"] != "untestable"]
        n_decided = sum(c["reading"] != "not detectable" for c in cells)
        decided, tested = decided + n_decided, tested + len(cells)
        lines.append(f"| {claim['id']}. {claim['title']} | **{claim['verdict']}** | {n_decided} of {len(cells)} |")
    gate = spec.get("teacher_gate")
    gate_text = (f" **Teacher gate**: a teacher must be at least {100 * gate['gap']:g} points of test accuracy above "
                 f"every group of the cell trained without a teacher ({', '.join(gate.get('against', []))}); where it "
                 f"is not, the sub-claims that use its students are *untestable* there, outside the family and the "
                 f"verdict." if gate else "")
    lines += ["", f"In all, {decided} of the {tested} tested sub-claims are decided (+, − or =).", "",
              f"Generated by `kdlab report --claims {claims_file}` from the archived study results (summaries, "
              f"metrics and analysis files; no checkpoints). Machines: {where}.", "",
              "**Conventions.** Final-epoch weights, test split (validation only to fit temperatures and, for claim "
              "2, to pick settings). Mean ± sample std over seeds, 95% Student-t interval for accuracy; comparisons "
              "pair runs by seed. ECE: 15 equal-width right-closed bins. **Verdict rule v2** "
              "(src/kdlab/analysis/verdicts.py, docs/claims_rule_v2.md): every sub-claim is one pre-declared contrast "
              "with a margin δ in the metric's units tied to the published effect, its paired differences signed so "
              "that the claimed direction is positive. Its mark is + (shown on the claimed side: one-sided paired "
              "t-test), − (shown on the other side), = (shown within ±δ: two one-sided tests) or *not detectable* "
              "(none; the smallest effect its pairs detect with 80% power, MDE, beside it), with Holm's correction "
              "across the claim's sub-claims in each (dataset, model), each test at 0.025 one-sided (the 95% "
              "interval). A claimed effect (higher, lower) *holds* on +, *fails* on − or = (an effect, if any, below "
              "δ); a claimed reach (not lower, not higher) holds on + or =, fails on −; *approaches* holds when the "
              "first gap is shown and the last is shown within ±δ. A claim is *not detectable here* when fewer than "
              "half of its tested sub-claims are decided; otherwise *supported* when none fails, *not supported* "
              "when none holds, *mixed* when some hold and some fail." + gate_text, ""]
    if spec.get("datasets"):
        lines += ["## Datasets, networks and schedules", ""]
        for name, note in spec["datasets"].items():
            lines += [f"* `{name}/*`: {str(note).strip()}"]
        lines.append("")
    if spec.get("commands"):
        lines += ["## Regenerate every number", "", "```bash", spec["commands"].strip(), "```", ""]
    return "\n".join(lines + sections)
