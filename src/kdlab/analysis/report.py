"""Reports: ``kdlab report STUDY_DIR | RUN_DIR... --out DIR`` writes ``DIR/report.md``, ``DIR/report.json`` and PNGs.

What it computes, per group of runs that differ only by seed (a study's groups; otherwise runs with the same
dataset, model, method, hyper-parameters and label noise):

* accuracy, NLL, Brier, ECE, adaptive ECE, classwise ECE, and test ECE/NLL after temperature scaling (fitted on
  the val split by NLL), mean +- sample std and a 95% Student-t interval over seeds; agreement with and
  KL(teacher || student) to the teacher for distilled runs; wall time and training images per second;
* paired differences against the baseline group (pairs by seed; mean, 95% interval, paired t-test p-value);
* Mueller et al.'s projection of three classes onto the plane through their templates, and the spread ratio
  (within-class RMS spread / mean distance between templates; lower is tighter) for every run;
* plots: reliability diagrams before and after temperature scaling, projections (train and test, same axes for
  every run) and training curves of every logged term.

Selection convention: ``final`` (default) uses the last epoch's weights and the predictions saved with the run;
``best`` takes accuracy, NLL and ECE from the epoch selected by the run's ``best_by`` (no other metric exists there).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path


from kdlab.analysis import stats
from kdlab.analysis.runs import (RunEntry, collect_runs, provenance, resolve_classes, run_metrics, run_projection,
                                 stored_reliability)
from kdlab.errors import KdlabError
from kdlab.io import atomic_write_json, atomic_write_text, read_predictions
from kdlab.store.rundir import RunDir

MAIN_METRICS = ("acc", "nll", "brier", "ece", "adaptive_ece", "classwise_ece")




# ---------------------------------------------------------------------------------------------------- collecting








# ---------------------------------------------------------------------------------------------------- metrics










# ---------------------------------------------------------------------------------------------------- projections




# ---------------------------------------------------------------------------------------------------- the report


def load_groups(paths: list[str | Path], selection: str = "final", classes: list[str] | None = None,
                variant: str = "A", per_class: int = 100, spreads: bool = True):
    """The completed runs under ``paths`` with their metrics (and, with ``spreads``, their projections), grouped by
    (dataset, model, group) and sorted by seed: (entries, groups, the study's baseline, class ids, class names)."""
    if selection not in ("final", "best"):
        raise KdlabError(f"report: selection must be final or best, got {selection!r}")
    entries, study_baseline = collect_runs(paths)
    groups: dict[tuple, list[RunEntry]] = defaultdict(list)
    for entry in entries:
        entry.metrics = run_metrics(entry, selection)
        groups[entry.key].append(entry)
    for members in groups.values():
        members.sort(key=lambda e: (e.seed is None, e.seed if e.seed is not None else 0))
    class_ids, class_names = resolve_classes(entries[0].summary, classes)
    if spreads and selection == "final":
        for entry in entries:
            entry.spread = run_projection(entry, class_ids, variant, per_class)
    return entries, groups, study_baseline, class_ids, class_names


def build_report(paths: list[str | Path], out: str | Path, baseline: str | None = None,
                 classes: list[str] | None = None, selection: str = "final", variant: str = "A",
                 per_class: int = 100, plots: bool = True) -> dict:
    """Write ``out/report.md``, ``out/report.json`` and the PNGs for the runs under ``paths``; return the record."""
    entries, groups, study_baseline, class_ids, class_names = load_groups(paths, selection, classes, variant,
                                                                          per_class, spreads=plots)
    baseline = baseline or study_baseline
    if baseline is not None and not any(key[2] == baseline for key in groups):
        raise KdlabError(f"report: baseline {baseline!r} is not a group of these runs "
                         f"({', '.join(sorted({key[2] for key in groups}))})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"selection": selection, "baseline": baseline, "classes": class_names, "projection_variant": variant,
              "groups": [group_record(key, members) for key, members in groups.items()], "paired": []}
    if baseline is not None:
        record["paired"] = _paired(groups, baseline)
    images = plot_groups(groups, out, class_ids, class_names) if plots else {}
    atomic_write_json(out / "report.json", record)
    atomic_write_text(out / "report.md", _markdown(record, entries, images, paths))
    return record




def group_record(key: tuple, members: list[RunEntry]) -> dict:
    dataset, model, group = key
    first = members[0].summary
    values: dict[str, list[float]] = defaultdict(list)
    for entry in members:
        for name, value in entry.metrics.items():
            values[name].append(value)
        for split in ("train", "test"):
            if entry.spread:
                values[f"spread_{split}"].append(entry.spread[split]["spread_ratio"])
                values[f"spread_centroids_{split}"].append(entry.spread[split]["spread_ratio_centroids"])
    return {
        "dataset": dataset, "model": model, "group": group, "method": first["method"],
        "method_params": {k: v for k, v in first.get("method_params", {}).items() if k != "teacher"},
        "label_noise": first.get("data", {}).get("label_noise"),
        "epochs": first["epochs"], "seeds": [e.seed for e in members], "runs": [str(e.path) for e in members],
        "metrics": {name: stats.summarize(v) for name, v in values.items() if len(v) == len(members)},
    }


def _paired(groups: dict[tuple, list[RunEntry]], baseline: str) -> list[dict]:
    rows = []
    for (dataset, model, group), members in groups.items():
        base = groups.get((dataset, model, baseline))
        if group == baseline or base is None:
            continue
        base_by_seed = {e.seed: e for e in base}
        pairs = [(e, base_by_seed[e.seed]) for e in members if e.seed in base_by_seed]
        if not pairs:
            continue
        row = {"dataset": dataset, "model": model, "group": group, "baseline": baseline, "n": len(pairs)}
        heads = [name for name in pairs[0][0].metrics if name.startswith("acc@")]
        for name in ("acc", "nll", "ece", "ece_ts", "robust_acc", *heads):
            # a head's accuracy is compared with the baseline's model accuracy (the same network trained alone)
            base_name = "acc" if name.startswith("acc@") else name
            if all(name in a.metrics and base_name in b.metrics for a, b in pairs):
                row[name] = stats.paired_difference([a.metrics[name] for a, _ in pairs],
                                                    [b.metrics[base_name] for _, b in pairs])
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------- plots


def plot_groups(groups: dict[tuple, list[RunEntry]], out: Path, class_ids: list[int], class_names: list[str],
                prefix: str = "", which: tuple[str, ...] = ("reliability", "projection", "curves")) -> dict:
    """The PNGs of ``which`` plots for ``groups`` in ``out`` (file names start with ``prefix``): {kind: file name}."""
    from kdlab.analysis import plots

    images = {}
    several = len({key[:2] for key in groups}) > 1  # name each panel by dataset and model too
    label = {key: f"{key[0]}, {key[1]}: {key[2]}" if several else key[2] for key in groups}
    firsts = [(label[key], members[0]) for key, members in groups.items()]
    entries, after = [], []
    for group, entry in firsts if "reliability" in which else []:
        seed = f" (seed {entry.seed})" if entry.seed is not None else ""
        file = entry.path / "predictions" / "test.npz"
        if file.is_file():
            arrays = read_predictions(file)
            logits, labels = arrays["logits"], arrays["labels"]
            entries.append((f"{group}{seed}", logits, labels))
            if "temperature" in entry.metrics:
                t = entry.metrics["temperature"]
                after.append((f"{group}{seed}, T={t:.2f}", logits / t, labels))
        elif (stored := stored_reliability(entry.path)) is not None:
            entries.append((f"{group}{seed}", stored[0]))
            if "temperature" in entry.metrics:
                after.append((f"{group}{seed}, T={entry.metrics['temperature']:.2f}", stored[1]))
    if entries:
        images["reliability"] = plots.reliability_grid(entries, out / f"{prefix}reliability.png").name
    if after:
        images["reliability_ts"] = plots.reliability_grid(after, out / f"{prefix}reliability_ts.png").name
    panels = []
    for group, entry in firsts if "projection" in which else []:
        if entry.spread:
            panels.append({"title": group, **{split: (entry.spread[split]["points"], entry.spread[split]["labels"],
                                                      entry.spread[split]["templates"]) for split in ("train", "test")},
                           "spread_ratio": {split: entry.spread[split]["spread_ratio"] for split in ("train", "test")}})
    if panels:
        images["projection"] = plots.projection_grid(panels, out / f"{prefix}projection.png",
                                                     dict(zip(class_ids, class_names)),
                                                     title="Penultimate layer, plane through the class templates").name
    histories = {}
    for key, members in groups.items() if "curves" in which else []:
        histories[label[key]] = [h for h in (_history(e.path) for e in members) if h]
    histories = {k: v for k, v in histories.items() if v}
    if histories:
        images["curves"] = plots.training_curves(histories, out / f"{prefix}curves.png").name
    return images


def _history(path: Path) -> list[dict]:
    file = RunDir(path).metrics
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------- markdown


def fmt(summary: dict | None, digits: int = 4, ci: bool = False) -> str:
    if summary is None or summary.get("n", 0) == 0 or not math.isfinite(summary["mean"]):
        return "–"
    if summary["n"] == 1:
        return f"{summary['mean']:.{digits}f}"
    text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
    if ci and summary["n"] > 1:
        text += f" [{summary['ci_low']:.{digits}f}, {summary['ci_high']:.{digits}f}]"
    return text


def _markdown(record: dict, entries: list[RunEntry], images: dict, paths) -> str:
    first = entries[0].summary
    lines = ["# kdlab report", ""]
    lines.append(f"Runs: {len(entries)} from {', '.join(str(p) for p in paths)}. Machines: "
                 f"{provenance([entry.summary for entry in entries])}; kdlab {first.get('kdlab_version')} "
                 f"({(first.get('git_sha') or 'unknown')[:10]}).")
    lines.append("")
    convention = ("final epoch's weights, test split" if record["selection"] == "final"
                  else "the epoch each run selected by its best_by metric (" + first.get("best_by", "val_acc") + ")")
    lines.append(f"**Convention.** Metrics are of the {convention}. Temperature scaling: one temperature per run, "
                 "fitted by NLL on the validation split, applied to test. Mean ± sample standard deviation over "
                 "seeds, with a 95% Student-t confidence interval for accuracy; paired differences pair runs by seed. "
                 "ECE: 15 equal-width bins, right-closed.")
    noise = {json.dumps({k: g["label_noise"][k] for k in ("kind", "rate", "seed", "clean_val") if k in g["label_noise"]},
                        sort_keys=True) for g in record["groups"] if g["label_noise"]}
    if noise:
        lines.append("")
        lines.append("**Label noise.** Training labels corrupted as " + "; ".join(sorted(noise)) +
                     ". The test split is clean, so test accuracy is clean-test accuracy.")
    lines += ["", "## Accuracy and calibration", ""]
    has_fidelity = any("agreement" in g["metrics"] for g in record["groups"])
    header = ["dataset", "model", "group", "seeds", "epochs", "test acc [95% CI]", "NLL", "ECE", "ECE after TS",
              "T", "NLL after TS", "Brier", "adaptive ECE", "classwise ECE"]
    if has_fidelity:
        header += ["agreement", "KL(t‖s)"]
    header += ["wall s", "train img/s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in record["groups"]:
        m = g["metrics"].get
        row = [g["dataset"], g["model"], g["group"], str(len(g["seeds"])), str(g["epochs"]), fmt(m("acc"), ci=True),
               fmt(m("nll")), fmt(m("ece")), fmt(m("ece_ts")), fmt(m("temperature"), 2), fmt(m("nll_ts")),
               fmt(m("brier")), fmt(m("adaptive_ece")), fmt(m("classwise_ece"))]
        if has_fidelity:
            row += [fmt(m("agreement")), fmt(m("fidelity_kl"))]
        row += [fmt(m("wall_seconds"), 0), fmt(m("images_per_second"), 0)]
        lines.append("| " + " | ".join(row) + " |")
    if record["paired"]:
        lines += ["", f"## Paired differences against `{record['baseline']}` (same seed)", "",
                  "| dataset | model | group | pairs | Δ test acc [95% CI] | p | Δ NLL [95% CI] | Δ ECE [95% CI] | Δ ECE after TS |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in record["paired"]:
            p = row.get("acc", {}).get("p_value", math.nan)
            lines.append(f"| {row['dataset']} | {row['model']} | {row['group']} | {row['n']} | {fmt(row.get('acc'), ci=True)} | "
                         f"{'–' if not math.isfinite(p) else f'{p:.3f}'} | {fmt(row.get('nll'), ci=True)} | "
                         f"{fmt(row.get('ece'), ci=True)} | {fmt(row.get('ece_ts'))} |")
    lines += _robustness_lines(record)
    online = [g for g in record["groups"] if any(name.startswith("acc@") for name in g["metrics"])]
    if online:
        lines += ["", "## Heads of online runs", "",
                  "Every head of each online run on the test split: the peers, the group leader (OKDDip) and the peer "
                  "ensemble (mean of the peers' logits); the run's model is its `inference` head. Δ: paired "
                  "difference against the baseline's accuracy (the network trained alone), same seed.", "",
                  "| dataset | model | group | head | test acc [95% CI] | NLL | ECE | Δ acc vs baseline [95% CI] |",
                  "|---|---|---|---|---|---|---|---|"]
        paired = {(r["dataset"], r["model"], r["group"]): r for r in record["paired"]}
        for g in online:
            m = g["metrics"].get
            for head in [name[4:] for name in g["metrics"] if name.startswith("acc@")]:
                delta = paired.get((g["dataset"], g["model"], g["group"]), {}).get(f"acc@{head}")
                lines.append(f"| {g['dataset']} | {g['model']} | {g['group']} | {head} | {fmt(m(f'acc@{head}'), ci=True)} | "
                             f"{fmt(m(f'nll@{head}'))} | {fmt(m(f'ece@{head}'))} | {fmt(delta, ci=True)} |")
    if any("spread_test" in g["metrics"] for g in record["groups"]):
        lines += ["", f"## Penultimate-layer projection (Mueller et al. 2019), classes {', '.join(record['classes'])}", "",
                  "Spread ratio = mean within-class RMS distance to the class centroid / mean distance between the "
                  f"projected class templates (variant {record['projection_variant']}); lower means tighter clusters. "
                  "The centroid version divides by the mean distance between class centroids instead.", "",
                  "| dataset | model | group | spread ratio, train | spread ratio, test | centroid ratio, train | centroid ratio, test |",
                  "|---|---|---|---|---|---|---|"]
        for g in record["groups"]:
            m = g["metrics"].get
            lines.append(f"| {g['dataset']} | {g['model']} | {g['group']} | {fmt(m('spread_train'), 3)} | "
                         f"{fmt(m('spread_test'), 3)} | {fmt(m('spread_centroids_train'), 3)} | "
                         f"{fmt(m('spread_centroids_test'), 3)} |")
    titles = {"reliability": "Reliability diagrams (first seed of each group)",
              "reliability_ts": "Reliability diagrams after temperature scaling (T fitted on val)",
              "projection": "Projections (first seed of each group; all panels share their axes)",
              "curves": "Training curves (mean over seeds, band = min to max)"}
    for name, file in images.items():
        lines += ["", f"## {titles[name]}", "", f"![{name}]({file})"]
    lines.append("")
    return "\n".join(lines)


def _robustness_lines(record: dict) -> list[str]:
    """The PGD table, for the groups whose runs measured robust accuracy (recipe ``robustness:``)."""
    robust = [g for g in record["groups"] if "robust_acc" in g["metrics"]]
    if not robust:
        return []
    paired = {(r["dataset"], r["model"], r["group"]): r.get("robust_acc") for r in record["paired"]}
    lines = ["", "## Robust accuracy (PGD, final weights, test split)", "",
             "The attack each run's recipe names under `robustness:` (its summary.json has the settings); "
             f"Δ: paired difference against `{record['baseline']}`, same seed, where both measured it.", "",
             "| dataset | model | group | seeds | clean acc [95% CI] | robust acc [95% CI] | Δ robust acc [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for g in robust:
        m = g["metrics"].get
        delta = paired.get((g["dataset"], g["model"], g["group"]))
        lines.append(f"| {g['dataset']} | {g['model']} | {g['group']} | {len(g['seeds'])} | {fmt(m('acc'), ci=True)} | "
                     f"{fmt(m('robust_acc'), ci=True)} | {fmt(delta, ci=True)} |")
    return lines
