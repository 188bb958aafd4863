"""PNG figures for reports: reliability diagrams, template-plane projections, training curves.

Figures are built as standalone ``matplotlib.figure.Figure`` objects rendered by the Agg canvas, never through
``pyplot``, so nothing global (backend, current figure, rcParams) is touched. Each ``build_*`` function returns the
Figure (for tests and notebooks); each writer saves it as a PNG atomically (temporary file in the target folder, then
``os.replace``, via :func:`kdlab.io.atomic_write`) and returns the path.

Conventions shown in the figures:

* Reliability diagrams (Guo et al. 2017; Müller et al. 2019 Fig. 3): conf_i = max_k softmax(z_i)_k, bins
  (m/n_bins, (m+1)/n_bins] equal-width and right-closed, per-bin accuracy bars, the gap to the mean confidence shaded,
  the share of samples per bin underneath, ECE (docs/methods/calibration.md §6.5, :func:`kdlab.metrics.ece`) in the
  title.
* Projections (Müller et al. 2019 Fig. 1; :mod:`kdlab.analysis.projection`): one column per run, rows train / test,
  every subplot on the same x and y limits with equal aspect, so cluster sizes can be compared across panels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kdlab.analysis.projection import _to_numpy
from kdlab.io import atomic_write
from kdlab.metrics.calibration import reliability_bins

MAX_COLUMNS = 4
CLASS_COLORS = ("#1f77b4", "#d62728", "#2ca02c")
DEFAULT_CURVE_KEYS = ("val_acc", "test_acc", "test_nll", "test_ece")
PNG_DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (creating the folder), release its artists, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=PNG_DPI))
    finally:
        fig.clear()
    return path




# --------------------------------------------------------------------------------------------------------------------
# Reliability diagrams


def ece_of_bins(stats: Mapping[str, np.ndarray]) -> float:
    """The ECE of :func:`reliability_bins`' statistics: sum_m count_m/n * |accuracy_m − confidence_m|."""
    gaps = np.abs(np.nan_to_num(stats["accuracy"]) - np.nan_to_num(stats["confidence"]))
    return float(np.sum(stats["count"] / stats["count"].sum() * gaps))


def _draw_reliability(fig: Figure, cell, title: str, stats: Mapping[str, np.ndarray]) -> None:
    """One diagram from :func:`reliability_bins`' statistics (ECE and accuracy follow from them exactly)."""
    n_bins = len(stats["count"])
    n = int(stats["count"].sum())
    ece_value = ece_of_bins(stats)
    inner = cell.subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
    ax = fig.add_subplot(inner[0])
    ax_count = fig.add_subplot(inner[1], sharex=ax)
    edges, count = stats["edges"], stats["count"]
    width = edges[1] - edges[0]
    centers = edges[:-1] + width / 2
    full = count > 0
    acc, conf = stats["accuracy"][full], stats["confidence"][full]
    ax.bar(centers[full], acc, width=width, color="#4c72b0", edgecolor="black", linewidth=0.6, label="accuracy")
    ax.bar(
        centers[full],
        np.abs(conf - acc),
        bottom=np.minimum(conf, acc),
        width=width,
        color="#dd8452",
        alpha=0.45,
        edgecolor="#c44e52",
        hatch="//",
        linewidth=0.6,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1.2, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"{title}  ECE {ece_value:.3f}")
    ax.legend(loc="upper left", fontsize="small")
    accuracy = float(np.nansum(stats["accuracy"] * count) / n)
    ax.text(
        0.97,
        0.03,
        f"accuracy {accuracy:.3f}\nn = {n}, {n_bins} bins",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize="small",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )
    ax.tick_params(labelbottom=False)
    ax_count.bar(centers, 100 * count / n, width=width, color="grey", edgecolor="black", linewidth=0.5)
    ax_count.set_xlim(0, 1)
    ax_count.set_xlabel("confidence (max softmax probability)")
    ax_count.set_ylabel("samples (%)")


def build_reliability_figure(entries: Sequence[tuple], n_bins: int = 15) -> Figure:
    """Reliability diagrams of ``entries`` side by side, at most 4 per row: each (title, logits, labels), or
    (title, bins) with the statistics of :func:`reliability_bins` (e.g. stored with an archived run)."""
    if not entries:
        raise ValueError("no entries to draw")
    ncols = min(len(entries), MAX_COLUMNS)
    nrows = math.ceil(len(entries) / ncols)
    fig = _new_figure(4.2 * ncols, 4.8 * nrows)
    grid = fig.add_gridspec(nrows, ncols)
    for i, (title, *data) in enumerate(entries):
        stats = data[0] if len(data) == 1 else reliability_bins(*data, n_bins=n_bins)
        _draw_reliability(fig, grid[i // ncols, i % ncols], title, stats)
    return fig


def reliability_diagram(logits, labels, title: str, path: str | Path, n_bins: int = 15) -> Path:
    """One reliability diagram (accuracy per confidence bin, gap shading, sample share, ECE in the title) as PNG."""
    return save_png(build_reliability_figure([(title, logits, labels)], n_bins), path)


def reliability_grid(entries: Sequence[tuple[str, object, object]], path: str | Path, n_bins: int = 15) -> Path:
    """Reliability diagrams of [(title, logits, labels), ...] in rows of at most 4, to compare methods (pass
    temperature-scaled logits as extra entries for before/after comparisons). Writes a PNG, returns its path."""
    return save_png(build_reliability_figure(entries, n_bins), path)


# --------------------------------------------------------------------------------------------------------------------
# Template-plane projections

PROJECTION_ROWS = ("train", "test")


def _square_limits(panels: Sequence[Mapping], rows: Sequence[str]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Common x and y limits covering every point and template, with equal ranges (so equal aspect fills a square)."""
    chunks = []
    for panel in panels:
        for row in rows:
            if row in panel:
                points, _, template_points = panel[row]
                chunks += [
                    _to_numpy(points, dtype=np.float64).reshape(-1, 2),
                    _to_numpy(template_points).reshape(-1, 2),
                ]
    allpts = np.concatenate(chunks)
    allpts = allpts[np.all(np.isfinite(allpts), axis=1)]
    if len(allpts) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    center = (lo + hi) / 2
    half = max(float(np.max(hi - lo)) / 2, 1e-9) * 1.08
    return (center[0] - half, center[0] + half), (center[1] - half, center[1] + half)


def build_projection_figure(
    panels: Sequence[Mapping], class_names: Mapping[int, str], title: str | None = None
) -> Figure:
    """Grid of projections: one column per panel (run), rows train and test, one shared x/y scale for all subplots.

    ``panels`` = [{"title": str, "train": (points2d, labels, template_points), "test": (...),
    "spread_ratio": {"train": float, "test": float}}, ...]; a missing row or spread ratio is left out.
    ``class_names`` maps each of the 3 class ids to its name, in the order of the template_points rows (the
    ``classes`` order of the projection), e.g. ``{c: names[c] for c in classes}``.
    """
    if not panels:
        raise ValueError("no panels to draw")
    if len(class_names) != 3:
        raise ValueError(f"class_names must map the 3 projected class ids to names, got {dict(class_names)!r}")
    rows = [row for row in PROJECTION_ROWS if any(row in panel for panel in panels)]
    if not rows:
        raise ValueError(f"panels have neither of the rows {PROJECTION_ROWS}")
    xlim, ylim = _square_limits(panels, rows)
    ids = list(class_names)
    fig = _new_figure(3.8 * len(panels) + 1.5, 3.8 * len(rows) + (0.5 if title else 0))
    axes = fig.subplots(len(rows), len(panels), squeeze=False)
    for j, panel in enumerate(panels):
        for i, row in enumerate(rows):
            ax = axes[i][j]
            heading = f"{panel.get('title', f'run {j + 1}')} — {row}"
            ratio = panel.get("spread_ratio", {}).get(row)
            if ratio is not None:
                heading += f"\nspread ratio {ratio:.3f}"
            ax.set_title(heading, fontsize="medium")
            if row in panel:
                points, labels, template_points = panel[row]
                p = _to_numpy(points, dtype=np.float64).reshape(-1, 2)
                y = _to_numpy(labels).reshape(-1)
                t = _to_numpy(template_points, dtype=np.float64).reshape(-1, 2)
                for k, c in enumerate(ids):
                    members = p[y == c]
                    ax.scatter(members[:, 0], members[:, 1], s=10, alpha=0.55, color=CLASS_COLORS[k], linewidths=0)
                for k in range(min(len(t), 3)):
                    ax.scatter(
                        t[k, 0],
                        t[k, 1],
                        s=260,
                        marker="*",
                        color=CLASS_COLORS[k],
                        edgecolors="black",
                        linewidths=1.2,
                        zorder=3,
                    )
            else:
                ax.text(0.5, 0.5, f"no {row} data", transform=ax.transAxes, ha="center", va="center", color="grey")
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_aspect("equal", adjustable="box")
            ax.grid(True, linewidth=0.4, alpha=0.5)
            ax.set_xlabel("plane axis 1 (activation units)")
            ax.set_ylabel("plane axis 2 (activation units)")
            ax.label_outer()  # the scale is shared: tick and axis labels on the outer edge only
    handles = [
        Line2D([], [], linestyle="", marker="o", markersize=7, color=CLASS_COLORS[k], label=str(class_names[c]))
        for k, c in enumerate(ids)
    ]
    handles.append(
        Line2D(
            [],
            [],
            linestyle="",
            marker="*",
            markersize=14,
            color="white",
            markeredgecolor="black",
            label="class template (last-layer weights + bias)",
        )
    )
    fig.legend(handles=handles, loc="outside right center", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def projection_grid(
    panels: Sequence[Mapping], path: str | Path, class_names: Mapping[int, str], title: str | None = None
) -> Path:
    """PNG of :func:`build_projection_figure` written atomically to ``path``; returns the path."""
    return save_png(build_projection_figure(panels, class_names, title), path)


# --------------------------------------------------------------------------------------------------------------------
# Training curves


def _is_number(value) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _runs_of(history) -> list[list[Mapping]]:
    """A label's value as a list of runs: one run (list of records) or several (list of lists of records)."""
    if not history:
        return []
    if isinstance(history[0], Mapping):
        return [list(history)]
    return [list(run) for run in history if run]


def _series(run: Sequence[Mapping], key: str) -> dict[float, float]:
    """epoch -> value of ``key`` over a run's records that have a finite number for it (x = record index + 1 when a
    record has no "epoch")."""
    out = {}
    for i, record in enumerate(run):
        value = record.get(key)
        if _is_number(value):
            epoch = record.get("epoch", i + 1)
            out[float(epoch)] = float(value)
    return out


def _default_keys(runs: Sequence[Sequence[Mapping]]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for record in run:
            for key in record:
                if key.startswith("train_") and not key.endswith("_per_second"):  # loss terms and train_acc
                    seen.setdefault(key, None)
    keys = sorted(seen, key=lambda k: (k != "train_loss", k != "train_acc", k))
    return keys + list(DEFAULT_CURVE_KEYS)


def _axis_label(key: str) -> str:
    if key.endswith("_acc"):
        return "accuracy (fraction)"
    if key.endswith("_ece"):
        return "ECE (fraction, 15 bins)"
    if key == "lr":
        return "learning rate"
    if key.endswith("_per_second"):
        return "images per second"
    if key.endswith(("_loss", "_nll")) or key.startswith("train_"):
        return "loss (nats)"
    return key


def build_training_figure(histories: Mapping[str, Sequence], keys: Sequence[str] | None = None) -> Figure:
    """One subplot per metric key, one line per label, x = epoch.

    ``histories`` maps a label to a run's per-epoch records (dicts as in ``metrics.jsonl``) or to a list of such runs
    (seeds): then the mean over the runs is drawn with a shaded min–max band. Default keys: every ``train_*`` key
    plus val_acc, test_acc, test_nll, test_ece; keys no record has are skipped, and so are records lacking a key.
    """
    runs_by_label = {label: _runs_of(history) for label, history in histories.items()}
    runs_by_label = {label: runs for label, runs in runs_by_label.items() if runs}
    all_runs = [run for runs in runs_by_label.values() for run in runs]
    wanted = list(keys) if keys is not None else _default_keys(all_runs)
    present = [k for k in dict.fromkeys(wanted) if any(_series(run, k) for run in all_runs)]
    if not present:
        raise ValueError(f"none of the keys {wanted} has a numeric value in the histories")
    ncols = min(len(present), 3)
    nrows = math.ceil(len(present) / ncols)
    fig = _new_figure(4.6 * ncols, 3.3 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    colors = [f"C{i % 10}" for i in range(len(runs_by_label))]
    handles = []
    for color, (label, runs) in zip(colors, runs_by_label.items()):
        name = label if len(runs) == 1 else f"{label} (mean, min–max of {len(runs)} runs)"
        handles.append(Line2D([], [], color=color, label=name))
    for ax, key in zip(axes, present):
        for color, runs in zip(colors, runs_by_label.values()):
            series = [_series(run, key) for run in runs]
            series = [s for s in series if s]
            if not series:
                continue
            epochs = sorted(set().union(*series))
            values = [[s[e] for s in series if e in s] for e in epochs]
            ax.plot(
                epochs,
                [np.mean(v) for v in values],
                color=color,
                linewidth=1.5,
                marker="." if len(epochs) < 30 else None,
            )
            if len(series) > 1:
                ax.fill_between(
                    epochs, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2, linewidth=0
                )
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_axis_label(key))
        ax.grid(True, linewidth=0.4, alpha=0.5)
        if key == "lr":
            lows = [v for runs in runs_by_label.values() for run in runs for v in _series(run, key).values()]
            if min(lows) > 0 and max(lows) / min(lows) > 20:
                ax.set_yscale("log")
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4), fontsize="small")
    return fig


def training_curves(histories: Mapping[str, Sequence], path: str | Path, keys: Sequence[str] | None = None) -> Path:
    """PNG of :func:`build_training_figure` written atomically to ``path``; returns the path."""
    return save_png(build_training_figure(histories, keys), path)
